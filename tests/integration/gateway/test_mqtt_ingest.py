"""MQTT nodes: every reading lands in the journal once, and is PUBACKed/acked only after commit."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import aiomqtt

from gateway.protocol.messages import Ack, Channel, ReadingBatch, Sample, TimeBase
from gateway.protocol.mqtt_topics import format_topic
from gateway.protocol.payload import decode_message, encode_message
from gateway.sources.mqtt import MqttSource
from tests.fixtures.gateway import gateway_config, journal_keys, running_gateway, wait_until
from tests.fixtures.ports import free_port
from tests.fixtures.servers import Mosquitto

CH = (Channel("current", "A"),)


def batch(node: str, seq: int, n: int = 4, boot: int = 5) -> ReadingBatch:
    samples = tuple(Sample(100 * (seq + i), (float(seq + i),)) for i in range(n))
    return ReadingBatch(node, boot, seq, TimeBase.UPTIME_MS, CH, samples)


def mqtt_cfg(tmp_path: Path, broker: Mosquitto, site: str, **extra: object):  # type: ignore[no-untyped-def]
    return gateway_config(
        tmp_path,
        site=site,
        mqtt={"enabled": True, "url": broker.url, "client_id": f"gw-{site}"},
        **extra,
    )


def small_queue_cfg(tmp_path: Path, broker: Mosquitto, site: str):  # type: ignore[no-untyped-def]
    """A 30-message ingest queue and 20-message commits: easy to fill."""
    return mqtt_cfg(
        tmp_path, broker, site, queue={"max_messages": 30}, journal={"max_commit_messages": 20}
    )


async def test_readings_are_journaled_once_and_acked(
    mosquitto: Mosquitto, mqtt_prefix: str, tmp_path: Path
) -> None:
    cfg = mqtt_cfg(tmp_path, mosquitto, mqtt_prefix)
    acks: list[Ack] = []
    async with (
        running_gateway(cfg),
        aiomqtt.Client(mosquitto.host, mosquitto.port) as node,
    ):
        await node.subscribe(format_topic(mqtt_prefix, "n1", "ack"), qos=1)
        topic = format_topic(mqtt_prefix, "n1", "readings")
        for seq in range(1, 41, 4):
            await node.publish(topic, encode_message(batch("n1", seq)), qos=1)
        await node.publish(topic, encode_message(batch("n1", 1)), qos=1)  # a resend

        async def collect() -> None:
            async for message in node.messages:
                acks.append(decode_message(bytes(message.payload)))  # type: ignore[arg-type]
                if acks[-1].up_to_seq == 40:
                    return

        async with asyncio.timeout(10):
            await collect()
    keys = journal_keys(cfg)
    assert sorted(keys) == [("n1", 5, s) for s in range(1, 41)]
    assert acks[-1] == Ack("n1", 5, 40)


async def test_malformed_payloads_are_counted_and_ingest_goes_on(
    mosquitto: Mosquitto, mqtt_prefix: str, tmp_path: Path
) -> None:
    cfg = mqtt_cfg(tmp_path, mosquitto, mqtt_prefix)
    async with (
        running_gateway(cfg) as gw,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as node,
    ):
        good = format_topic(mqtt_prefix, "n2", "readings")
        await node.publish(good, b"\xff\x00garbage", qos=1)
        await node.publish(good, b'{"v": 1, "not": "a message"}', qos=1)
        await node.publish(f"fieldgate/{mqtt_prefix}/n2", b"x", qos=1)  # not our topic shape
        # payload claims another node than its topic: rejected, not misfiled
        await node.publish(good, encode_message(batch("intruder", 1)), qos=1)
        await node.publish(good, encode_message(batch("n2", 1)), qos=1)
        await wait_until(lambda: len(journal_keys(cfg)) == 4, what="the good batch")
        assert sum(gw.metrics.malformed.values()) >= 3
    assert {k[0] for k in journal_keys(cfg)} == {"n2"}


async def test_unknown_nodes_are_rejected_and_counted(
    mosquitto: Mosquitto, mqtt_prefix: str, tmp_path: Path
) -> None:
    cfg = mqtt_cfg(tmp_path, mosquitto, mqtt_prefix, allowed_nodes=["known"])
    async with (
        running_gateway(cfg) as gw,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as node,
    ):
        await node.publish(
            format_topic(mqtt_prefix, "stranger", "readings"),
            encode_message(batch("stranger", 1)),
            qos=1,
        )
        await node.publish(
            format_topic(mqtt_prefix, "known", "readings"), encode_message(batch("known", 1)), qos=1
        )
        await wait_until(lambda: len(journal_keys(cfg)) == 4, what="the known node's batch")
        await wait_until(lambda: gw.metrics.rejected_nodes[("mqtt", "stranger")] == 1)
    assert {k[0] for k in journal_keys(cfg)} == {"known"}


async def test_broker_restart_loses_and_duplicates_nothing(
    restartable_mosquitto: Mosquitto, mqtt_prefix: str, tmp_path: Path
) -> None:
    broker = restartable_mosquitto
    cfg = mqtt_cfg(tmp_path, broker, mqtt_prefix)
    async with running_gateway(cfg) as gw:
        topic = format_topic(mqtt_prefix, "n3", "readings")
        async with aiomqtt.Client(broker.host, broker.port) as node:
            for seq in range(1, 21, 4):
                await node.publish(topic, encode_message(batch("n3", seq)), qos=1)
        await wait_until(lambda: len(journal_keys(cfg)) == 20, what="first half")
        broker.stop()
        await wait_until(lambda: not gw.sources[0].ready.is_set(), what="gateway noticing")
        broker.start()
        await wait_until(gw.sources[0].ready.is_set, what="gateway reconnecting")
        async with aiomqtt.Client(broker.host, broker.port) as node:
            for seq in range(17, 41, 4):  # 17..20 again: a node resending after the outage
                await node.publish(topic, encode_message(batch("n3", seq)), qos=1)
        await wait_until(lambda: len(journal_keys(cfg)) == 40, what="second half")
    assert sorted(journal_keys(cfg)) == [("n3", 5, s) for s in range(1, 41)]


async def test_a_full_queue_leaves_the_backlog_at_the_broker_and_loses_nothing(
    mosquitto: Mosquitto, mqtt_prefix: str, tmp_path: Path
) -> None:
    # The journal is stalled, so nothing is committed or PUBACKed. The gateway takes what
    # its queue holds (plus one waiting message and the writer's stalled batch), stops
    # reading, and the rest of the 500 waits at the broker; then all arrive, once, in order.
    cfg = small_queue_cfg(tmp_path, mosquitto, mqtt_prefix)
    stall = threading.Event()
    async with (
        running_gateway(cfg) as gw,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as node,
    ):
        source = gw.sources[0]
        assert isinstance(source, MqttSource)
        stalled = asyncio.create_task(gw.writer.call(lambda: stall.wait(20)))
        try:
            topic = format_topic(mqtt_prefix, "n5", "readings")
            for seq in range(1, 501):
                await node.publish(topic, encode_message(batch("n5", seq, n=1)), qos=1)
            await wait_until(lambda: source.read_pauses >= 1, what="reading paused")
            await asyncio.sleep(0.5)  # time for any over-reading to show
            assert source.received <= 30 + 1 + 20
            assert source.pubacked == 0
        finally:
            stall.set()
            await stalled
        await wait_until(lambda: len(journal_keys(cfg)) == 500, what="the whole backlog")
        await wait_until(lambda: source.pubacked == 500, what="every message PUBACKed")
    assert sorted(s for _n, _b, s in journal_keys(cfg)) == list(range(1, 501))
    assert source.received == 500  # nothing redelivered: the connection never dropped


async def test_a_session_backlog_larger_than_the_queue_is_taken_in_turn_after_a_restart(
    mosquitto: Mosquitto, mqtt_prefix: str, tmp_path: Path
) -> None:
    # While the gateway is down its persistent session collects 300 messages; on reconnect
    # they arrive before SUBACK and overflow a 30-message queue: reading pauses and resumes
    # until all are in, with nothing lost or doubled.
    cfg = small_queue_cfg(tmp_path, mosquitto, mqtt_prefix)
    async with running_gateway(cfg):
        pass  # registers the session and its subscriptions
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as node:
        topic = format_topic(mqtt_prefix, "n6", "readings")
        for seq in range(1, 301):
            await node.publish(topic, encode_message(batch("n6", seq, n=1)), qos=1)
    async with running_gateway(cfg) as gw:
        source = gw.sources[0]
        assert isinstance(source, MqttSource)
        await wait_until(lambda: len(journal_keys(cfg)) == 300, what="the session's backlog")
        assert source.read_pauses >= 1
    assert sorted(s for _n, _b, s in journal_keys(cfg)) == list(range(1, 301))


async def test_the_metrics_endpoint_reports_ingest_per_transport(
    mosquitto: Mosquitto, mqtt_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    cfg = mqtt_cfg(
        tmp_path,
        mosquitto,
        mqtt_prefix,
        metrics={"enabled": True, "port": port},
        allowed_nodes=["n7"],
    )
    async with (
        running_gateway(cfg) as gw,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as node,
    ):
        topic = format_topic(mqtt_prefix, "n7", "readings")
        await node.publish(topic, encode_message(batch("n7", 1)), qos=1)
        await node.publish(topic, encode_message(batch("n7", 1)), qos=1)  # a resend
        await node.publish(topic, b"\xff", qos=1)
        stranger = format_topic(mqtt_prefix, "n8", "readings")
        await node.publish(stranger, encode_message(batch("n8", 1)), qos=1)
        await wait_until(lambda: gw.metrics.duplicates["mqtt"] == 4, what="the resend counted")
        await wait_until(lambda: gw.metrics.rejected_nodes[("mqtt", "n8")] == 1)
        await asyncio.wait_for(gw.metrics_ready.wait(), 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        body = (await reader.read()).decode()
        writer.close()
    lines = set(body.splitlines())
    assert 'fieldgate_messages_in_total{transport="mqtt"} 4' in lines
    assert 'fieldgate_duplicates_total{transport="mqtt"} 4' in lines
    assert any(line.startswith('fieldgate_malformed_total{transport="mqtt"') for line in lines)
    assert 'fieldgate_rejected_total{transport="mqtt",node="n8"} 1' in lines
    assert "fieldgate_queue_depth 0.0" in lines
    assert "fieldgate_mqtt_unacked 0.0" in lines
    assert any(line.startswith("fieldgate_journal_bytes ") for line in lines)
