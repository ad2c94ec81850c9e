"""Fewer system calls under paho: buffered reads, and writes corked per write round.

paho reads an MQTT packet with one ``recv`` for the fixed header byte, one per
remaining-length byte and one for the body, and writes every queued packet with its own
``send``. On a busy link (a backlog of single-reading messages, each PUBACKed after its
commit) those calls, plus one ``epoll`` wake-up per packet, cost more than everything the
gateway does with a reading. Each one also releases the GIL, and getting it back from the
journal thread can take a while.

:class:`BufferedSocket` reads whatever the kernel holds in one call and serves paho's small
reads from memory. Bytes held in user space are invisible to ``epoll``, so whoever drives
paho keeps calling ``loop_read`` while :meth:`BufferedSocket.pending` is non-zero, as paho's
own loop does for TLS sockets, whose decrypted bytes live in user space too.

Writes: between :meth:`BufferedSocket.cork` and :meth:`BufferedSocket.uncork` (one
``loop_write`` round) packets are collected and leave in one ``send``. What the kernel
will not take then stays here, in order, until the next round.

Reads can also be paused (``reading_paused``): ``recv`` then says "would block", so paho
stops between packets and TCP flow control keeps the rest at the broker.

paho has no public way to hand it a socket. :func:`buffer_sockets` wraps the one private
method that creates it, ``Client._create_socket`` (the only private access of the MQTT
source; ``paho-mqtt`` is pinned below 3 and a unit test pins the method's presence).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from typing import Any

import paho.mqtt.client as paho

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
        self.closed = False
        # While paused, recv() would block and pending() is 0, so paho stops reading.
        self.reading_paused = False

    # -- reads ---------------------------------------------------------------------------

    def recv(self, bufsize: int) -> bytes:
        if self.reading_paused:
            raise BlockingIOError("reading is paused")
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

    @property
    def unsent(self) -> int:
        """Bytes accepted from paho that the kernel has not taken yet."""
        return self._out_bytes

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

    def uncork(self) -> bool:
        """Send what was collected; True when the kernel took all of it.

        Raises ``OSError`` when the connection is broken (what was collected is dropped).
        """
        self._corked = False
        if self.closed:
            return True
        try:
            self._flush()
        except OSError:
            self._out, self._out_bytes = [], 0
            raise
        return not self._out

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

    def close(self) -> None:
        self.closed = True
        self._buffer, self._offset = b"", 0
        with contextlib.suppress(OSError):
            self._flush()  # best effort: a DISCONNECT may be waiting here
        self._out, self._out_bytes = [], 0
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return (
            f"BufferedSocket({self._inner!r}, buffered_in={len(self._buffer) - self._offset},"
            f" buffered_out={self._out_bytes})"
        )


def buffer_sockets(client: paho.Client) -> None:
    """Make every connection ``client`` opens from now on a :class:`BufferedSocket`.

    The one private access of the MQTT source: paho 2.x creates its socket in
    ``Client._create_socket`` and offers no public hook to supply or wrap it. Wrapping it
    keeps paho's own TCP, TLS, proxy and websocket handling; everything else the source
    does goes through paho's documented external-loop API.
    """
    create_socket = client._create_socket  # noqa: SLF001 - no public socket hook in paho 2.x

    def create_buffered_socket() -> BufferedSocket:
        return BufferedSocket(create_socket())

    client._create_socket = create_buffered_socket  # type: ignore[method-assign]  # noqa: SLF001 - as above
