"""BufferedSocket: paho's reads and writes, fewer system calls, same bytes in the same order.

Every test runs on a real connected socket pair; ``CountingSocket`` only counts the calls
that reach the kernel.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest

from gateway.sources.mqtt_socket import READ_SIZE, WRITE_LIMIT, BufferedSocket, buffer_sockets


class CountingSocket:
    """A real socket that counts recv/send calls (instrumentation, not a stand-in)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recvs = 0
        self.sends = 0

    def recv(self, bufsize: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(bufsize)

    def send(self, data: bytes) -> int:
        self.sends += 1
        return self.sock.send(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


Pair = tuple[CountingSocket, socket.socket]


@pytest.fixture
def pair() -> Iterator[tuple[CountingSocket, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.settimeout(5)
    yield CountingSocket(ours), peer
    ours.close()
    peer.close()


def read_exactly(peer: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = peer.recv(n - len(out))
        assert chunk, "peer saw end of stream early"
        out += chunk
    return bytes(out)


def test_small_reads_are_served_from_one_kernel_read(pair: Pair) -> None:
    counting, peer = pair
    sock = BufferedSocket(counting)
    packets = [bytes([0x30, 3]) + b"abc" for _ in range(100)]
    peer.sendall(b"".join(packets))
    got = []
    for _ in packets:
        header = sock.recv(1) + sock.recv(1)
        got.append(header + sock.recv(header[1]))
    assert got == packets
    assert counting.recvs == 1
    assert sock.pending() == 0


def test_pending_counts_what_is_buffered(pair: Pair) -> None:
    counting, peer = pair
    sock = BufferedSocket(counting)
    peer.sendall(b"0123456789")
    assert sock.pending() == 0  # nothing read from the kernel yet
    assert sock.recv(4) == b"0123"
    assert sock.pending() == 6
    assert sock.recv(100) == b"456789"
    assert sock.pending() == 0


def test_an_empty_buffer_and_an_idle_socket_would_block(pair: Pair) -> None:
    counting, peer = pair
    sock = BufferedSocket(counting)
    with pytest.raises(BlockingIOError):
        sock.recv(1)
    peer.sendall(b"x")
    assert sock.recv(1) == b"x"
    with pytest.raises(BlockingIOError):
        sock.recv(1)


def test_end_of_stream_comes_after_the_buffered_bytes(pair: Pair) -> None:
    counting, peer = pair
    sock = BufferedSocket(counting)
    peer.sendall(b"last words")
    peer.shutdown(socket.SHUT_WR)
    assert sock.recv(4) == b"last"
    assert sock.recv(READ_SIZE) == b" words"
    assert sock.recv(1) == b""


def test_a_large_read_asks_the_kernel_directly(pair: Pair) -> None:
    counting, peer = pair
    sock = BufferedSocket(counting)
    peer.sendall(b"y" * 1000)
    assert sock.recv(1000) == b"y" * 1000
    assert sock.pending() == 0


def test_corked_sends_leave_in_one_kernel_write(pair: Pair) -> None:
    counting, peer = pair
    sock = BufferedSocket(counting)
    pubacks = [bytes([0x40, 2, mid >> 8, mid & 0xFF]) for mid in range(1, 501)]
    sock.cork()
    for packet in pubacks:
        assert sock.send(packet) == len(packet)
    assert counting.sends == 0, "nothing leaves while corked"
    assert sock.uncork() is True
    assert counting.sends == 1
    assert read_exactly(peer, 4 * 500) == b"".join(pubacks)


def test_uncorked_sends_go_straight_to_the_kernel(pair: Pair) -> None:
    counting, peer = pair
    sock = BufferedSocket(counting)
    assert sock.send(b"abc") == 3
    assert counting.sends == 1
    assert read_exactly(peer, 3) == b"abc"


def test_what_the_kernel_cannot_take_waits_in_order_for_the_next_round() -> None:
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours.setblocking(False)
    peer.setblocking(False)
    sock = BufferedSocket(ours)
    # Far more than the socket buffers hold while nobody reads the other end.
    payload = [bytes([i % 251]) * 1000 for i in range(200)]
    sock.cork()
    for chunk in payload:
        sock.send(chunk)
    assert sock.uncork() is False, "the kernel cannot have taken 200 kB"
    assert 0 < sock.unsent < 200_000
    received = bytearray()
    rounds = 1
    while len(received) < 200_000:
        try:
            received += peer.recv(65536)
        except BlockingIOError:
            sock.cork()  # an empty round, as when the writer callback fires
            sock.uncork()
            rounds += 1
            assert rounds < 10_000, "the rest never went out"
    assert sock.unsent == 0
    assert bytes(received) == b"".join(payload)
    sock.close()
    peer.close()


def test_past_the_write_limit_paho_is_told_to_wait(pair: Pair) -> None:
    counting, _peer = pair
    counting.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock = BufferedSocket(counting)
    sock.cork()
    sent = 0
    while True:
        try:
            sent += sock.send(b"z" * 4096)
        except BlockingIOError:
            break
        assert sent < 4 * WRITE_LIMIT, "a corked socket kept accepting past its limit"
    assert sent >= WRITE_LIMIT


def test_close_forgets_buffered_bytes_and_closes_the_socket(pair: Pair) -> None:
    counting, peer = pair
    sock = BufferedSocket(counting)
    peer.sendall(b"abcdef")
    assert sock.recv(2) == b"ab"
    sock.close()
    assert sock.pending() == 0
    assert counting.sock.fileno() == -1


def test_paused_reads_would_block_and_hide_what_is_buffered(pair: Pair) -> None:
    counting, peer = pair
    sock = BufferedSocket(counting)
    peer.sendall(b"0123456789")
    assert sock.recv(2) == b"01"
    sock.reading_paused = True
    assert sock.pending() == 0
    with pytest.raises(BlockingIOError):
        sock.recv(1)
    sock.reading_paused = False
    assert sock.pending() == 8
    assert sock.recv(8) == b"23456789"


def test_paho_still_creates_its_socket_where_the_wrapper_is_installed() -> None:
    # buffer_sockets wraps paho's private Client._create_socket (the MQTT source's only
    # private access, pinned to paho-mqtt < 3); everything else used is public API.
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    buffer_sockets(client)
    for name in ("loop_read", "loop_write", "loop_misc", "want_write", "socket", "ack"):
        assert callable(getattr(client, name)), name
    server = socket.create_server(("127.0.0.1", 0))
    try:
        client.connect("127.0.0.1", server.getsockname()[1])
        assert isinstance(client.socket(), BufferedSocket)
    finally:
        client.disconnect()
        server.close()
