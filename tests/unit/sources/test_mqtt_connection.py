"""MqttConnection as an asyncio protocol: one write per loop iteration, reads paused between
two packets, PUBACKs only when asked.

Each test runs the connection on a real transport over a connected socket pair (the peer
plays the broker with bytes from gateway.protocol.mqtt_wire); ``CountingTransport`` only
counts the writes that reach that transport.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.protocol import mqtt_wire as wire
from gateway.protocol.mqtt_wire import Publish
from gateway.sources.mqtt_connection import MqttConnection


class CountingTransport:
    """A real transport that counts write calls (instrumentation, not a stand-in)."""

    def __init__(self, inner: asyncio.Transport) -> None:
        self.inner = inner
        self.writes = 0
        self.pauses = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.inner.write(data)

    def pause_reading(self) -> None:
        self.pauses += 1
        self.inner.pause_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Wired:
    def __init__(self, conn: MqttConnection, transport: CountingTransport, peer: socket.socket):
        self.conn, self.transport, self.peer = conn, transport, peer
        self.messages: list[Publish] = []
        self.handle = self.messages.append  # what on_message does; a test may replace it

    def from_broker(self, data: bytes) -> None:
        self.conn.data_received(data)

    async def to_broker(self, n: int) -> bytes:
        loop = asyncio.get_running_loop()
        out = b""
        while len(out) < n:
            out += await loop.sock_recv(self.peer, n - len(out))
        return out


@pytest.fixture
async def wired() -> AsyncIterator[Wired]:
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    holder: list[Wired] = []

    def on_message(message: Publish) -> None:
        holder[0].handle(message)

    conn = MqttConnection("peer", 0, client_id="c", keepalive_s=30, on_message=on_message)
    # A plain protocol owns the real transport; the connection is handed a counting view.
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    assert isinstance(transport, asyncio.Transport)
    counting = CountingTransport(transport)
    conn.connection_made(counting)  # type: ignore[arg-type]
    holder.append(Wired(conn, counting, peer))
    yield holder[0]
    transport.close()
    peer.close()


async def test_every_puback_queued_in_one_loop_iteration_leaves_in_one_write(
    wired: Wired,
) -> None:
    for mid in range(1, 101):
        wired.conn.ack(mid, 1)
    wired.conn.publish("n/ack", b"\x01", qos=0)
    assert wired.transport.writes == 0  # nothing written yet: corked until the loop runs
    await asyncio.sleep(0)
    assert wired.transport.writes == 1
    expected = b"".join(wire.encode_puback(mid) for mid in range(1, 101))
    expected += wire.encode_publish("n/ack", b"\x01", 0)
    assert await wired.to_broker(len(expected)) == expected


async def test_qos_0_messages_are_never_pubacked(wired: Wired) -> None:
    wired.conn.ack(0, 0)
    wired.conn.ack(9, 1)
    await asyncio.sleep(0)
    assert await wired.to_broker(4) == wire.encode_puback(9)


async def test_nothing_is_pubacked_unless_asked(wired: Wired) -> None:
    wired.from_broker(b"".join(wire.encode_publish("t", b"x", 1, m) for m in range(1, 11)))
    await asyncio.sleep(0.05)
    assert len(wired.messages) == 10
    assert wired.transport.writes == 0


async def test_a_pause_stops_between_two_packets_of_one_read_and_resume_goes_on(
    wired: Wired,
) -> None:
    packets = [wire.encode_publish("t", bytes([i]), 1, i + 1) for i in range(10)]

    def on_message(message: Publish) -> None:
        wired.messages.append(message)
        if len(wired.messages) == 3:
            wired.conn.pause_reading()

    wired.handle = on_message  # pauses as the source does when its queue is full
    wired.from_broker(b"".join(packets[:7]))
    wired.from_broker(b"".join(packets[7:]))  # arrived before the transport stopped reading
    await asyncio.sleep(0.05)
    assert [m.payload[0] for m in wired.messages] == [0, 1, 2]
    assert wired.transport.pauses == 1
    wired.conn.resume_reading()
    await asyncio.sleep(0.05)
    assert [m.payload[0] for m in wired.messages] == list(range(10))


async def test_publishes_to_one_topic_are_each_encoded_whole(wired: Wired) -> None:
    for seq in range(3):
        wired.conn.publish("fieldgate/s/n1/ack", bytes([seq]), qos=0)
    await asyncio.sleep(0)
    expected = b"".join(wire.encode_publish("fieldgate/s/n1/ack", bytes([s]), 0) for s in range(3))
    assert await wired.to_broker(len(expected)) == expected
