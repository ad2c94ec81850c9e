"""Fewer system calls under paho: buffered reads, and writes coalesced per write round.

paho reads an MQTT packet with one ``recv`` for the fixed header byte, one per
remaining-length byte and one for the body, and writes every queued packet with its own
``send``. On a busy link (a backlog of single-reading messages, each PUBACKed after its
commit) those calls, plus one ``epoll`` wake-up per packet, cost more than everything the
gateway does with a reading. Each one also releases the GIL, and getting it back from the
journal thread can take a while.

:class:`BufferedSocket` reads whatever the kernel holds in one call and serves paho's small
reads from memory. Bytes held in user space are invisible to ``epoll``, so somebody must
keep reading until the buffer is empty: paho and aiomqtt already do that for TLS sockets,
whose decrypted bytes live in user space too, by calling ``loop_read`` again while the
socket's ``pending()`` is non-zero. The wrapper reports its buffered byte count there.

Writes: inside one ``loop_write`` (one writable callback) the socket is *corked*: packets
are collected and leave in one ``send`` when the round ends. What the kernel will not take
then stays here, in order, and the socket's writer callback stays registered until it is out.

paho has no public hook for its socket; :func:`install_socket_buffering` wraps the private
``Client._create_socket`` and the public ``Client.loop_write`` of one paho client (a test
pins that paho still has them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

_LOGGER = logging.getLogger(__name__)

# Large enough that a backlog of small publishes arrives in a few calls; small enough
# that an idle gateway with a few connections does not care.
READ_SIZE = 64 * 1024
# Above this many unsent bytes, a corked send tries the kernel first and, if it is still
# full, tells paho to wait (BlockingIOError), which keeps the rest in paho's own queue.
WRITE_LIMIT = 256 * 1024

# What a non-blocking send raises when the kernel (or TLS) cannot take more right now.
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class BufferedSocket:
    """A socket with a read-ahead buffer and corked writes.

    Everything else goes to the wrapped socket (plain TCP, TLS or paho's websocket
    wrapper), so what paho sees from ``recv`` is unchanged: ``BlockingIOError`` (or a TLS
    want-read) when nothing is buffered and nothing has arrived, ``b""`` at end of stream,
    ``OSError`` on a broken connection.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._buffer = b""
        self._offset = 0
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._corked = False
        self._writer_fd: int | None = None  # our own writable callback, while bytes wait
        self._closed = False

    # -- reads ---------------------------------------------------------------------------

    def recv(self, bufsize: int) -> bytes:
        available = len(self._buffer) - self._offset
        if available == 0:
            data: bytes = self._inner.recv(max(bufsize, READ_SIZE))
            if len(data) <= bufsize:
                return data  # includes b"" (end of stream): nothing to keep
            self._buffer, self._offset = data, 0
            available = len(data)
        take = min(bufsize, available)
        start = self._offset
        self._offset = start + take
        if self._offset == len(self._buffer):
            out = self._buffer[start:] if start else self._buffer
            self._buffer, self._offset = b"", 0
            return out
        return self._buffer[start : start + take]

    def pending(self) -> int:
        """Bytes readable without waiting for the network (buffered here or in TLS)."""
        inner_pending = getattr(self._inner, "pending", None)
        inner = inner_pending() if inner_pending is not None else 0
        return len(self._buffer) - self._offset + inner

    # -- writes --------------------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> int:
        if self._out_bytes >= WRITE_LIMIT or (self._out and not self._corked):
            self._flush()
            if self._out_bytes >= WRITE_LIMIT or (self._out and not self._corked):
                raise BlockingIOError("earlier bytes are still waiting for the socket")
        if not self._corked:
            sent: int = self._inner.send(data)
            return sent
        self._out.append(bytes(data))
        self._out_bytes += len(data)
        return len(data)

    def cork(self) -> None:
        """Collect sends until :meth:`uncork`."""
        self._corked = True

    def uncork(
        self, on_writable: Callable[[], object], paho_wants_write: Callable[[], bool]
    ) -> None:
        """Send what was collected. What the kernel will not take now waits for
        ``on_writable``, registered as the socket's writer callback until it is all out
        (or until paho, which has packets of its own queued, keeps the writer registered)."""
        self._corked = False
        if self._closed:
            return
        try:
            self._flush()
        except OSError as exc:
            # A dead connection: drop what cannot be sent and let paho's reader see the end
            # of the stream, which is how it notices a lost connection anyway.
            _LOGGER.debug("mqtt socket: send failed (%s); shutting it down", exc)
            self._out, self._out_bytes = [], 0
            with contextlib.suppress(OSError):
                self._inner.shutdown(socket.SHUT_RDWR)
        if self._out:
            self._watch_writable(on_writable)
        elif self._writer_fd is not None:
            # paho's own registration follows want_write() at the end of every loop_write;
            # whichever callback is registered now calls the same corked loop_write.
            self._watch_writable(None, keep=paho_wants_write())

    def _flush(self) -> None:
        while self._out:
            data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
            try:
                sent = self._inner.send(data)
            except _WOULD_BLOCK:
                self._out, self._out_bytes = [data], len(data)
                return
            rest = data[sent:]
            self._out, self._out_bytes = ([rest], len(rest)) if rest else ([], 0)

    def _watch_writable(
        self, on_writable: Callable[[], object] | None, *, keep: bool = False
    ) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on an event loop: the next send flushes instead
        if on_writable is not None:
            self._writer_fd = self._inner.fileno()
            loop.add_writer(self._writer_fd, on_writable)
        elif self._writer_fd is not None:
            if not keep:
                loop.remove_writer(self._writer_fd)
            self._writer_fd = None

    def close(self) -> None:
        self._closed = True
        self._buffer, self._offset = b"", 0  # readers loop while pending() > 0
        with contextlib.suppress(OSError):
            self._flush()  # best effort: a DISCONNECT may be waiting here
        self._out, self._out_bytes = [], 0
        if self._writer_fd is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_writer(self._writer_fd)
            self._writer_fd = None
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return (
            f"BufferedSocket({self._inner!r}, buffered_in={len(self._buffer) - self._offset},"
            f" buffered_out={self._out_bytes})"
        )


def install_socket_buffering(paho_client: Any) -> None:
    """Make every connection ``paho_client`` opens from now on a :class:`BufferedSocket`,
    corked for the length of each ``loop_write``."""
    create_socket = paho_client._create_socket
    loop_write = paho_client.loop_write

    def create_buffered_socket() -> BufferedSocket:
        return BufferedSocket(create_socket())

    def corked_loop_write() -> Any:
        sock = paho_client.socket()
        if not isinstance(sock, BufferedSocket):
            return loop_write()
        sock.cork()
        try:
            return loop_write()
        finally:
            sock.uncork(corked_loop_write, paho_client.want_write)

    paho_client._create_socket = create_buffered_socket
    paho_client.loop_write = corked_loop_write
