"""The MQTT connection when the broker misbehaves, goes quiet, redelivers or splits packets.

Against the real mosquitto where it can show the property (redelivery with DUP, keepalive,
credentials); against a raw TCP server speaking scripted bytes where no real broker would
(malformed packets, a silent peer, packets cut at every byte, refusals). The raw server is
a stand-in only for those broker faults.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from gateway.errors import TransportError
from gateway.protocol import mqtt_wire as wire
from gateway.protocol.messages import Channel, ReadingBatch, Sample, TimeBase
from gateway.protocol.mqtt_topics import format_topic
from gateway.protocol.payload import encode_message
from gateway.sources.mqtt import MqttSource
from gateway.sources.mqtt_connection import MqttConnection
from tests.fixtures.gateway import gateway_config, journal_keys, running_gateway
from tests.fixtures.servers import Mosquitto
from tests.integration.gateway.test_mqtt_connection import Inbox, connection

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One client packet: (type, body), parsed by the standard's fixed header."""
    first = (await reader.readexactly(1))[0]
    size, shift = 0, 0
    while True:
        digit = (await reader.readexactly(1))[0]
        size |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            break
    return first >> 4, await reader.readexactly(size)


async def accept_session(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, suback: list[int] | None = None
) -> None:
    """CONNECT -> CONNACK, then SUBSCRIBE -> SUBACK (granting QoS 1 unless told)."""
    kind, _ = await read_packet(reader)
    assert kind == wire.CONNECT
    writer.write(wire.encode_connack(0))
    kind, body = await read_packet(reader)
    assert kind == wire.SUBSCRIBE
    writer.write(wire.encode_suback(int.from_bytes(body[:2], "big"), suback or [1]))
    await writer.drain()


@asynccontextmanager
async def raw_broker(script: Script) -> AsyncIterator[tuple[str, int]]:
    """A TCP server running ``script(reader, writer, n)`` for its n-th connection."""
    count = 0
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        count += 1
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await script(reader, writer, count)
            await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def served(host: str, port: int, inbox: Inbox, keepalive_s: int = 30) -> TransportError:
    """Connect, subscribe, and serve until the connection ends; the error it ends with."""
    conn = MqttConnection(host, port, client_id="c", keepalive_s=keepalive_s, on_message=inbox)
    inbox.conn = conn
    async with conn:
        await conn.subscribe([("#", 1)])
        with pytest.raises(TransportError) as info:
            await conn.serve()
    return info.value


async def test_a_malformed_packet_ends_the_connection_with_a_clear_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await accept_session(reader, writer)
        writer.write(wire.encode_publish("a", b"ok", 1, 1) + bytes.fromhex("41 02 0001"))

    inbox = Inbox()
    async with raw_broker(script) as (host, port), asyncio.timeout(10):
        error = await served(host, port, inbox)
    assert "malformed packet from the broker: PUBACK with reserved flags 0x1" in str(error)
    assert [m.payload for m in inbox.messages] == [b"ok"]  # what came before it was taken


async def test_packets_cut_at_every_byte_arrive_whole_and_in_order() -> None:
    stream = b"".join(wire.encode_publish(f"t/{i}", bytes([i]) * i, 1, i + 1) for i in range(60))

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await accept_session(reader, writer)
        for i in range(len(stream)):
            writer.write(stream[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(stream * 20)  # and then many packets in one write

    inbox = Inbox()
    async with raw_broker(script) as (host, port), asyncio.timeout(20):
        conn = MqttConnection(host, port, client_id="c", keepalive_s=30, on_message=inbox)
        inbox.conn = conn
        async with conn:
            await conn.subscribe([("#", 1)])
            await inbox.wait_for(60 * 21)
    expected = [(f"t/{i}", bytes([i]) * i, i + 1) for i in range(60)] * 21
    assert [(m.topic, m.payload, m.mid) for m in inbox.messages] == expected


async def test_a_broker_that_stops_answering_is_given_up_after_a_keepalive() -> None:
    pings = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        nonlocal pings
        await accept_session(reader, writer)
        while True:  # reads the PINGREQs, answers none
            kind, _ = await read_packet(reader)
            pings += kind == wire.PINGREQ_TYPE

    async with raw_broker(script) as (host, port), asyncio.timeout(15):
        error = await served(host, port, Inbox(), keepalive_s=1)
    assert "no PINGRESP from the broker within 1 s" in str(error)
    assert pings == 1


@pytest.mark.parametrize(
    ("code", "reason"), [(4, "bad user name or password"), (5, "not authorized")]
)
async def test_a_refused_connect_says_why(code: int, reason: str) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await read_packet(reader)
        writer.write(wire.encode_connack(code))

    async with raw_broker(script) as (host, port), asyncio.timeout(10):
        conn = MqttConnection(host, port, client_id="c", keepalive_s=30, on_message=Inbox())
        with pytest.raises(TransportError, match=f"refused us: {reason}"):
            async with conn:
                pass


async def test_a_refused_subscription_is_a_transport_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> None:
        await accept_session(reader, writer, suback=[wire.SUBACK_FAILURE])

    async with raw_broker(script) as (host, port), asyncio.timeout(10):
        conn = MqttConnection(host, port, client_id="c", keepalive_s=30, on_message=Inbox())
        async with conn:
            with pytest.raises(TransportError, match=r"refused the subscription to \['#'\]"):
                await conn.subscribe([("#", 1)])


async def test_the_source_reconnects_after_a_malformed_packet_and_ingests(
    tmp_path: Path, mqtt_prefix: str
) -> None:
    reading = ReadingBatch(
        "n1", 1, 1, TimeBase.UPTIME_MS, (Channel("t", "degC"),), (Sample(0, (20.5,)),)
    )
    topic = format_topic(mqtt_prefix, "n1", "readings")
    pubacked: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await accept_session(reader, writer, suback=[1, 1, 1])
        if n == 1:
            writer.write(b"\xf0\x00")  # a reserved packet type: the gateway must hang up
            return
        writer.write(wire.encode_publish(topic, encode_message(reading), 1, 77))
        while True:
            kind, body = await read_packet(reader)
            if kind == wire.PUBACK and not pubacked.done():
                pubacked.set_result(int.from_bytes(body, "big"))

    async with raw_broker(script) as (host, port):
        cfg = gateway_config(
            tmp_path,
            site=mqtt_prefix,
            mqtt={"enabled": True, "url": f"mqtt://{host}:{port}", "reconnect_max_s": 0.5},
        )
        async with running_gateway(cfg) as gw, asyncio.timeout(20):
            source = next(s for s in gw.sources if isinstance(s, MqttSource))
            assert await pubacked == 77  # PUBACKed, hence committed first
            assert source.connections == 2
    assert journal_keys(cfg) == [("n1", 1, 1)]


# -- against the real mosquitto ---------------------------------------------------------------


async def test_what_was_not_pubacked_comes_back_marked_dup_after_a_reconnect(
    mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    topic, sub_id = f"{mqtt_prefix}/dup", f"{mqtt_prefix}-dup"
    async with connection(mosquitto, sub_id, Inbox()) as sub:
        await sub.subscribe([(topic, 1)])
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
            for i in range(5):
                await pub.publish(topic, bytes([i]), qos=1)
    first = Inbox(ack=False)
    async with connection(mosquitto, sub_id, first), asyncio.timeout(10):
        await first.wait_for(5)  # taken, never PUBACKed: the gateway "died" before commit
    again = Inbox()
    async with connection(mosquitto, sub_id, again), asyncio.timeout(10):
        await again.wait_for(5)
    assert [m.payload[0] for m in again.messages] == list(range(5))
    assert all(m.dup for m in again.messages)
    assert [m.mid for m in again.messages] == [m.mid for m in first.messages]


async def test_an_idle_connection_is_kept_alive_by_pings(
    mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    # mosquitto drops a client that sends nothing for 1.5 keepalives; 4 s of silence from
    # the nodes at a keepalive of 1 s needs the connection's own PINGREQs.
    topic = f"{mqtt_prefix}/idle"
    inbox = Inbox()
    conn = MqttConnection(
        mosquitto.host, mosquitto.port, client_id=f"{mqtt_prefix}-idle", keepalive_s=1,
        on_message=inbox,
    )  # fmt: skip
    inbox.conn = conn
    async with conn, asyncio.TaskGroup() as tg, asyncio.timeout(15):
        serving = tg.create_task(conn.serve())
        await conn.subscribe([(topic, 1)])
        await asyncio.sleep(4)
        assert not serving.done()
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
            await pub.publish(topic, b"still here", qos=1)
        await inbox.wait_for(1)
        serving.cancel()


async def test_credentials_are_presented_and_a_wrong_password_is_refused(
    tmp_path: Path, mqtt_prefix: str
) -> None:
    broker = Mosquitto(workdir=tmp_path / "auth", users={"gw": "right"})
    broker.start()
    try:

        def conn(password: str) -> MqttConnection:
            return MqttConnection(
                broker.host, broker.port, client_id=mqtt_prefix, keepalive_s=30,
                on_message=Inbox(), username="gw", password=password,
            )  # fmt: skip

        async with asyncio.timeout(10):
            async with conn("right") as good:
                await good.subscribe([("a", 1)])
            with pytest.raises(TransportError, match="refused us: not authorized"):
                async with conn("wrong"):
                    pass
    finally:
        broker.stop()


async def test_no_answer_to_connect_is_a_transport_error_in_time() -> None:
    async def script(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter, _n: int) -> None:
        await read_packet(reader)  # takes CONNECT, answers nothing

    async with raw_broker(script) as (host, port), asyncio.timeout(10):
        conn = MqttConnection(
            host, port, client_id="c", keepalive_s=30, on_message=Inbox(), connect_timeout_s=0.5
        )
        with pytest.raises(TransportError, match="no CONNACK"):
            async with conn:
                pass
