"""The gateway's own MQTT connection (batched reads, corked writes), against a real broker:
nothing is held back, nothing reordered, nothing PUBACKed before the caller says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiomqtt
import pytest

from gateway.errors import TransportError
from gateway.protocol.mqtt_wire import Publish
from gateway.sources.mqtt_connection import MqttConnection
from tests.fixtures.ports import free_port
from tests.fixtures.servers import Mosquitto

N = 2000


class Inbox:
    """Collects what a MqttConnection receives; PUBACKs each message as it arrives
    unless told to hold them."""

    def __init__(self, *, ack: bool = True) -> None:
        self.messages: list[Publish] = []
        self.conn: MqttConnection | None = None
        self._ack = ack
        self.arrived = asyncio.Event()

    def __call__(self, message: Publish) -> None:
        self.messages.append(message)
        self.arrived.set()
        if self._ack and self.conn is not None:
            self.conn.ack(message.mid, message.qos)

    async def wait_for(self, count: int) -> None:
        while len(self.messages) < count:
            self.arrived.clear()
            await self.arrived.wait()


@asynccontextmanager
async def connection(
    broker: Mosquitto, client_id: str, inbox: Inbox
) -> AsyncIterator[MqttConnection]:
    conn = MqttConnection(
        broker.host, broker.port, client_id=client_id, keepalive_s=30, on_message=inbox
    )
    inbox.conn = conn
    async with conn, asyncio.TaskGroup() as tg:
        serving = tg.create_task(conn.serve(), name="test:mqtt:serve")
        yield conn
        serving.cancel()


async def test_a_backlog_and_the_quiet_message_after_it_all_arrive_in_order(
    mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    topic = f"{mqtt_prefix}/burst"
    sub_id = f"{mqtt_prefix}-sub"
    # A persistent session collects the backlog while the subscriber is away, so on
    # reconnect the broker floods it: many packets per kernel read.
    async with connection(mosquitto, sub_id, Inbox()) as sub:
        await sub.subscribe([(topic, 1)])
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
        await asyncio.gather(*(pub.publish(topic, i.to_bytes(4, "big"), qos=1) for i in range(N)))
        inbox = Inbox()
        async with connection(mosquitto, sub_id, inbox), asyncio.timeout(20):
            await inbox.wait_for(N)
            assert [int.from_bytes(m.payload, "big") for m in inbox.messages] == list(range(N))
            # After the backlog the buffer is empty; a single late message must still
            # wake the reader (bytes left in user space would not).
            await asyncio.sleep(0.2)
            await pub.publish(topic, b"late", qos=1)
            await inbox.wait_for(N + 1)
            assert inbox.messages[-1].payload == b"late"


async def test_a_burst_published_through_corked_writes_arrives_whole(
    mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    topic = f"{mqtt_prefix}/corked"
    async with (
        aiomqtt.Client(mosquitto.host, mosquitto.port) as sub,
        connection(mosquitto, f"{mqtt_prefix}-pub", Inbox()) as pub,
    ):
        await sub.subscribe(topic, qos=1)
        # QoS 1 publishes wait for their PUBACKs, so these write rounds interleave with reads.
        await asyncio.gather(
            *(pub.publish_confirmed(topic, i.to_bytes(4, "big") * 64) for i in range(N))
        )
        got = []
        async with asyncio.timeout(20):
            async for message in sub.messages:
                assert isinstance(message.payload, bytes)
                got.append(int.from_bytes(message.payload[:4], "big"))
                if len(got) == N:
                    break
        assert sorted(got) == list(range(N))


async def test_what_is_not_pubacked_is_redelivered_and_what_is_pubacked_is_not(
    mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    topic = f"{mqtt_prefix}/manual"
    sub_id = f"{mqtt_prefix}-manual"
    async with connection(mosquitto, sub_id, Inbox()) as sub:
        await sub.subscribe([(topic, 1)])
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
        for i in range(10):
            await pub.publish(topic, bytes([i]), qos=1)
    held = Inbox(ack=False)
    async with connection(mosquitto, sub_id, held) as sub, asyncio.timeout(10):
        await held.wait_for(10)
        for message in held.messages[:4]:
            sub.ack(message.mid, message.qos)  # "committed": only the first four
        await asyncio.sleep(0.2)  # the PUBACKs leave in the next write round
    again = Inbox()
    async with connection(mosquitto, sub_id, again), asyncio.timeout(10):
        await again.wait_for(6)
        await asyncio.sleep(0.2)  # anything more would have arrived by now
    assert [m.payload[0] for m in again.messages] == list(range(4, 10))


async def test_paused_reading_takes_nothing_until_resumed(
    mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    topic = f"{mqtt_prefix}/paused"
    inbox = Inbox()
    async with (
        connection(mosquitto, f"{mqtt_prefix}-paused", inbox) as sub,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as pub,
        asyncio.timeout(10),
    ):
        await sub.subscribe([(topic, 1)])
        sub.pause_reading()
        for i in range(50):
            await pub.publish(topic, bytes([i]), qos=1)
        await asyncio.sleep(0.3)
        assert inbox.messages == []
        sub.resume_reading()
        await inbox.wait_for(50)
        assert [m.payload[0] for m in inbox.messages] == list(range(50))


async def test_no_broker_is_a_transport_error(mqtt_prefix: str) -> None:
    conn = MqttConnection(
        "127.0.0.1", free_port(), client_id=mqtt_prefix, keepalive_s=30, on_message=Inbox()
    )
    with pytest.raises(TransportError, match="cannot connect"):
        async with conn:
            pass
