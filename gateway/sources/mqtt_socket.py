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

Reads can also be paused (:class:`ReadControl`): the gateway stops taking messages while
its ingest queue is full, and TCP flow control keeps the rest at the broker instead of in
gateway memory.

paho has no public hook for its socket; :func:`install_socket_buffering` wraps the private
``Client._create_socket`` and the public ``Client.loop_write`` and ``Client.loop_read`` of
one paho client (a test pins that paho still has them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from paho.mqtt.client import MQTT_ERR_SUCCESS

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
        self.closed = False
        # While paused, buffered bytes are not offered: readers stop at pending() == 0.
        self.reading_paused = False

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
        if self.reading_paused:
            return 0
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
        if self.closed:
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
        self.closed = True
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


class ReadControl:
    """Pause and resume reading from one paho client's broker connection.

    Paused, the socket leaves the event loop's readers and paho's ``loop_read`` returns at
    once, so no message is taken until :meth:`resume`; bytes already buffered wait here.
    aiomqtt's reader callback is gone after a pause, so a resumed socket is read by
    :meth:`_read`, which does what it did: ``loop_read`` until nothing is pending. A pause
    longer than the keepalive ends the connection (paho misses the PINGRESP), and the
    source reconnects; the broker still holds everything not PUBACKed.
    """

    def __init__(self, paho_client: Any) -> None:
        self._paho = paho_client
        self.paused = False

    def pause(self) -> None:
        if self.paused:
            return
        self.paused = True
        sock = self._paho.socket()
        if isinstance(sock, BufferedSocket) and not sock.closed:
            sock.reading_paused = True
            asyncio.get_running_loop().remove_reader(sock.fileno())

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        sock = self._paho.socket()
        if not isinstance(sock, BufferedSocket) or sock.closed:
            return  # the connection went away meanwhile; its successor reads afresh
        sock.reading_paused = False
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), self._read)
        if sock.pending():
            loop.call_soon(self._read)  # buffered bytes will not wake the selector

    def _read(self) -> None:
        sock = self._paho.socket()
        try:
            while not self.paused:
                self._paho.loop_read()
                current = self._paho.socket()
                if current is None or not current.pending():
                    break
        except Exception:
            _LOGGER.exception("mqtt: reading from the broker failed; dropping the connection")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # paho sees the end of the stream


def install_socket_buffering(paho_client: Any) -> ReadControl:
    """Make every connection ``paho_client`` opens from now on a :class:`BufferedSocket`,
    corked for the length of each ``loop_write``; return the control that pauses its reads."""
    create_socket = paho_client._create_socket  # noqa: SLF001 - replaced by the mqtt public-API rework
    loop_write = paho_client.loop_write
    loop_read = paho_client.loop_read
    control = ReadControl(paho_client)

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

    def gated_loop_read(max_packets: int = 1) -> Any:
        if control.paused:
            return MQTT_ERR_SUCCESS
        return loop_read(max_packets)

    paho_client._create_socket = create_buffered_socket  # noqa: SLF001 - replaced by the mqtt public-API rework
    paho_client.loop_write = corked_loop_write
    paho_client.loop_read = gated_loop_read
    return control
