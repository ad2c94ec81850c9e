"""One MCUmgr node over its console byte stream: requests, replies, and a pipeline.

The link owns the byte stream (a serial port or pty through pyserial-asyncio, or an
emulator's ``socket://`` UART) and one reader task that decodes replies and hands each to
the request waiting for its sequence number. :meth:`McuMgrLink.pipeline` keeps up to
``depth`` requests in flight, so a node with several MCUmgr buffers parses one request while
the next is on the wire; replies are taken in order and every one is checked.

Any failure of the stream (``OSError``, the port vanishing, the node resetting and going
silent) surfaces as :class:`~firmware_tools.flash.mcumgr.errors.LinkLost`; a reply with a
non-zero ``rc`` as :class:`~firmware_tools.flash.mcumgr.errors.SmpError` naming the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable
from typing import Final

import serial
import serial_asyncio
from smp import message as smpmsg

from firmware_tools.flash.mcumgr.codec import (
    DEFAULT_LINE_LENGTH,
    LineDecoder,
    Reply,
    decode_reply,
    encode,
)
from firmware_tools.flash.mcumgr.errors import LinkLost, NoSuchPort, SmpError
from gateway.errors import CodecError

_LOGGER = logging.getLogger(__name__)
_READ_BYTES: Final = 4096


class McuMgrLink:
    """Request/reply over one node's console; open with :meth:`open`, close with :meth:`close`."""

    def __init__(
        self,
        node_id: str,
        address: str,
        *,
        baud: int = 115_200,
        timeout_s: float = 5.0,
        line_length: int = DEFAULT_LINE_LENGTH,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self.baud = baud
        self.timeout_s = timeout_s
        self.line_length = line_length
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        self._lost: LinkLost | None = None
        # An emulated UART behind a socket (QEMU's CMSDK UART) can hold a frame's last byte
        # until more input comes; an empty line after each frame pushes it through (the
        # node's console skips empty lines).
        self._trailer = b"\n" if address.startswith("socket://") else b""
        self.generation = 0

    @property
    def is_open(self) -> bool:
        return self._writer is not None and self._lost is None

    async def open(self) -> None:
        if self.is_open:
            return
        await self.close()
        if "://" not in self.address and not os.path.exists(self.address):  # noqa: ASYNC240 - a stat
            raise NoSuchPort(self.node_id, self.address)
        try:
            self._reader, self._writer = await asyncio.wait_for(
                serial_asyncio.open_serial_connection(url=self.address, baudrate=self.baud),
                self.timeout_s,
            )
        except (OSError, serial.SerialException, TimeoutError) as exc:
            raise LinkLost(self.node_id, f"cannot open {self.address}: {exc}") from exc
        self._lost = None
        self.generation += 1  # what a caller learnt from the node before may be stale now
        # One reader per link, for the link's lifetime; close() cancels and awaits it.
        self._pump = asyncio.get_running_loop().create_task(
            self._read_loop(self._reader), name=f"mcumgr:read:{self.node_id}"
        )

    async def close(self) -> None:
        pump, self._pump = self._pump, None
        writer, self._writer = self._writer, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        if writer is not None:
            # The port may already be gone (unplugged, node killed): closing is best effort.
            with contextlib.suppress(OSError, serial.SerialException):
                writer.close()
        self._fail_waiting(LinkLost(self.node_id, "link closed"))

    async def request(
        self,
        request: smpmsg.Request,
        what: str,
        *,
        timeout_s: float | None = None,
        check: bool = True,
    ) -> Reply:
        """Send ``request``, wait for its reply; raise :class:`SmpError` on a non-zero rc
        (unless ``check`` is False). ``what`` names it in errors: ``fs upload of /x``."""
        future = self._send(request)
        reply = await self._wait(future, request, timeout_s)
        return _checked(self.node_id, reply, what) if check else reply

    async def pipeline(
        self,
        requests: Iterable[tuple[smpmsg.Request, str]],
        depth: int,
        *,
        max_bytes: int | None = None,
        check: bool = True,
    ) -> AsyncIterator[Reply]:
        """Send ``requests`` keeping up to ``depth`` in flight (and, with ``max_bytes``, no
        more message bytes than that, though always one); yield checked replies in order.

        Stops at the first error reply (raised as :class:`SmpError`); the replies to what was
        still in flight are then drained and dropped.
        """
        in_flight: list[tuple[asyncio.Future[Reply], smpmsg.Request, str]] = []
        it = iter(requests)
        pending: tuple[smpmsg.Request, str] | None = next(it, None)
        budget = max_bytes if max_bytes is not None else 1 << 30
        try:
            while True:
                while pending is not None and len(in_flight) < max(1, depth):
                    size = len(pending[0].BYTES)
                    used = sum(len(r.BYTES) for _f, r, _w in in_flight)
                    if in_flight and used + size > budget:
                        break
                    in_flight.append((self._send(pending[0]), pending[0], pending[1]))
                    pending = next(it, None)
                if not in_flight:
                    return
                future, request, what = in_flight.pop(0)
                reply = await self._wait(future, request, None)
                yield _checked(self.node_id, reply, what) if check else reply
        finally:
            for future, _request, _what in in_flight:
                future.cancel()
            self._waiting = {k: f for k, f in self._waiting.items() if not f.done()}

    # -- internals -----------------------------------------------------------------------

    def _send(self, request: smpmsg.Request) -> asyncio.Future[Reply]:
        if self._lost is not None:
            raise self._lost
        if self._writer is None:
            raise LinkLost(self.node_id, "not open")
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[request.header.sequence] = future
        try:
            self._writer.write(encode(request.BYTES, self.line_length) + self._trailer)
        except (OSError, serial.SerialException) as exc:
            self._waiting.pop(request.header.sequence, None)
            raise self._lose(f"write failed: {exc}") from exc
        return future

    async def _wait(
        self, future: asyncio.Future[Reply], request: smpmsg.Request, timeout_s: float | None
    ) -> Reply:
        try:
            async with asyncio.timeout(self.timeout_s if timeout_s is None else timeout_s):
                if self._writer is not None:
                    await self._writer.drain()
                return await future
        except TimeoutError as exc:
            raise self._lose(
                f"no answer within {self.timeout_s if timeout_s is None else timeout_s:.1f} s "
                f"to {type(request).__name__}"
            ) from exc
        except (OSError, serial.SerialException) as exc:
            raise self._lose(f"write failed: {exc}") from exc
        finally:
            self._waiting.pop(request.header.sequence, None)

    def _lose(self, detail: str) -> LinkLost:
        lost = LinkLost(self.node_id, detail)
        if self._lost is None:
            self._lost = lost
        self._fail_waiting(lost)
        return lost

    def _fail_waiting(self, exc: LinkLost) -> None:
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(exc)
                # Retrieved here so a future nobody awaits any more does not warn.
                future.exception()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        decoder = LineDecoder()
        while True:
            try:
                data = await reader.read(_READ_BYTES)
            except (OSError, serial.SerialException) as exc:
                self._lose(f"read failed: {exc}")
                return
            if not data:
                self._lose("the port closed (node reset, unplugged or killed)")
                return
            for message in decoder.feed(data):
                try:
                    reply = decode_reply(message)
                except CodecError as exc:
                    _LOGGER.debug("%s: undecodable SMP reply dropped: %s", self.node_id, exc)
                    continue
                future = self._waiting.pop(reply.sequence, None)
                if future is not None and not future.done():
                    future.set_result(reply)


def _checked(node_id: str, reply: Reply, what: str) -> Reply:
    if reply.rc != 0:
        raise SmpError(node_id, what, reply.rc, reply.err_group)
    return reply
