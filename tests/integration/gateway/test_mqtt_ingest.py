"""MQTT nodes: every reading lands in the journal once, and is PUBACKed/acked only after commit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt

from gateway.codecs.mqtt_topics import format_topic
from gateway.codecs.payload import decode_message, encode_message
from gateway.models import Ack, Channel, ReadingBatch, Sample, TimeBase
from tests.fixtures.gateway import gateway_config, journal_keys, running_gateway, wait_until
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
