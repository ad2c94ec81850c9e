"""Simulated MQTT nodes against a real mosquitto broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import aiomqtt

from firmware_tools.sim.fleet import SimConfig, Simulator
from gateway.protocol.messages import Ack, Command, CommandKind, ReadingBatch, Status, UplinkMessage
from gateway.protocol.mqtt_topics import decode_mqtt_payload, format_topic, parse_topic
from gateway.protocol.payload import encode_message
from tests.fixtures.servers import Mosquitto


class Subscriber:
    """A gateway stand-in: decodes uplinks, acks the gap-free prefix per (node, boot)."""

    def __init__(self, client: aiomqtt.Client, site: str) -> None:
        self.client = client
        self.site = site
        self.received: list[tuple[str, UplinkMessage]] = []
        self.have: dict[tuple[str, int], set[int]] = defaultdict(set)
        self.acked: dict[tuple[str, int], int] = defaultdict(int)
        self.acking = True

    async def pump(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for message in self.client.messages:
                    parts = parse_topic(str(message.topic))
                    if not parts.kind.is_uplink:
                        continue
                    assert isinstance(message.payload, bytes)
                    msg = decode_mqtt_payload(parts.kind, message.payload, parts.node_id)
                    assert isinstance(msg, UplinkMessage)
                    self.received.append((str(message.topic), msg))
                    key = (msg.node_id, msg.boot_id)
                    self.have[key].update(range(msg.seq, msg.last_seq + 1))
                    while self.acked[key] + 1 in self.have[key]:
                        self.acked[key] += 1
                    if self.acking:
                        ack = Ack(msg.node_id, msg.boot_id, self.acked[key])
                        topic = format_topic(self.site, msg.node_id, "ack")
                        await self.client.publish(topic, encode_message(ack), qos=1)


def mqtt_config(
    url: str,
    site: str,
    *,
    nodes: int = 2,
    json_payloads: bool = False,
    status_interval_ms: int = 60_000,
) -> SimConfig:
    return SimConfig(
        nodes=nodes,
        transports=("mqtt",),
        broker_url=url,
        site=site,
        rate_hz=20.0,
        batch_size=5,
        resend_timeout_ms=400,
        status_interval_ms=status_interval_ms,
        seed=2,
        json_payloads=json_payloads,
    )


async def test_nodes_publish_decodable_messages_on_their_topics_and_acks_come_back(
    mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(f"fieldgate/{mqtt_prefix}/+/+", qos=1)
        sub = Subscriber(client, mqtt_prefix)
        async with Simulator(mqtt_config(mosquitto.url, mqtt_prefix)) as sim:
            await sim.wait_ready()
            assert sim.addresses()["pump-01"] == ("mqtt", f"fieldgate/{mqtt_prefix}/pump-01/#")
            await sub.pump(1.5)
            stats = sim.stats()

    topics = {topic for topic, _ in sub.received}
    for node in ("pump-01", "pump-02"):
        assert f"fieldgate/{mqtt_prefix}/{node}/readings" in topics
        assert f"fieldgate/{mqtt_prefix}/{node}/status" in topics
        batches = [m for _, m in sub.received if isinstance(m, ReadingBatch) and m.node_id == node]
        assert len(batches) >= 4
        assert all(len(b.samples[0].values) == 5 for b in batches)
        assert stats[node]["acked"] >= len(batches)
        assert stats[node]["unacked"] <= 2
        assert stats[node]["resent"] == 0
        assert stats[node]["link_bad_in"] == 0
    assert all(isinstance(m, ReadingBatch | Status) for _, m in sub.received)


async def test_json_payload_option_publishes_the_json_form(
    mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(f"fieldgate/{mqtt_prefix}/+/readings", qos=1)
        cfg = mqtt_config(mosquitto.url, mqtt_prefix, nodes=1, json_payloads=True)
        async with Simulator(cfg):
            async with asyncio.timeout(5):
                message = await anext(aiter(client.messages))
    assert isinstance(message.payload, bytes)
    assert message.payload.startswith(b"{")
    msg = decode_mqtt_payload("readings", message.payload, "pump-01")
    assert isinstance(msg, ReadingBatch)


async def test_request_info_command_over_mqtt_gets_a_status_reply(
    mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(f"fieldgate/{mqtt_prefix}/pump-01/status", qos=1)
        cfg = mqtt_config(mosquitto.url, mqtt_prefix, nodes=1, status_interval_ms=600_000)
        async with Simulator(cfg) as sim:
            await sim.wait_ready()
            async with asyncio.timeout(5):
                boot_status = await anext(aiter(client.messages))  # the boot heartbeat
                cmd = Command("pump-01", 77, CommandKind.REQUEST_INFO)
                await client.publish(
                    format_topic(mqtt_prefix, "pump-01", "cmd"), encode_message(cmd), qos=1
                )
                reply = await anext(aiter(client.messages))
            assert sim.stats()["pump-01"]["commands"] == 1
    first = decode_mqtt_payload("status", bytes(boot_status.payload), "pump-01")
    second = decode_mqtt_payload("status", bytes(reply.payload), "pump-01")
    assert isinstance(first, Status)
    assert isinstance(second, Status)
    assert second.seq > first.seq


async def test_node_reconnects_after_a_broker_restart_and_resends_what_was_lost(
    restartable_mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    broker = restartable_mosquitto
    cfg = mqtt_config(broker.url, mqtt_prefix, nodes=1)
    async with Simulator(cfg) as sim:
        await sim.wait_ready()
        link = sim.nodes["pump-01"].link
        await asyncio.sleep(0.3)
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(0.5)  # data keeps coming while the broker is down
        await asyncio.to_thread(broker.start)
        async with asyncio.timeout(10):
            while link.stats.connects < 2:
                await link.ready.wait()
                await asyncio.sleep(0.05)
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.subscribe(f"fieldgate/{mqtt_prefix}/+/+", qos=1)
            sub = Subscriber(client, mqtt_prefix)
            await sub.pump(1.5)
        stats = sim.stats()["pump-01"]

    assert stats["link_connects"] >= 2
    # Nothing was acknowledged before the subscriber appeared, so the node resent its
    # backlog, from its boot heartbeat on, until the subscriber's acks covered it.
    key = next(iter(sub.have))
    assert min(sub.have[key]) == 1
    assert sub.acked[key] >= 20
    assert stats["resent"] > 0
