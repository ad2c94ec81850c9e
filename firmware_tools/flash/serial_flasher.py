"""Flash a node over its normal serial port with our binary transfer (docs/protocol.md §10).

The node keeps sending its CBOR uplink frames (readings, status) on the same port while it
is being flashed; frames whose payload does not start with 0xFC are skipped here. Writes are
one frame (at most a chunk plus a few bytes) at a time, each drained before the next, so the
pyserial-asyncio write buffer never grows past one frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

import serial
import serial_asyncio

from firmware_tools.flash.api import NodeUnreachable
from firmware_tools.flash.xfer_session import XferFlasher, XferSession
from gateway.protocol import xfer
from gateway.protocol.framing import FrameDecoder, encode_frame

_LOGGER = logging.getLogger(__name__)
_READ_BYTES = 4096


class SerialFlasher(XferFlasher):
    """:class:`~firmware_tools.flash.api.NodeFlasher` on a serial port (opened on first use)."""

    transport = "serial"

    def __init__(
        self,
        node_id: str,
        port: str,
        *,
        baud: int = 115_200,
        timeout_s: float = 5.0,
        chunk_bytes: int = xfer.DEFAULT_CHUNK_BYTES,
        window: int = xfer.DEFAULT_WINDOW,
    ) -> None:
        self._node_id = node_id
        self.port = port
        self.baud = baud
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = FrameDecoder()
        self._payloads: deque[bytes] = deque()
        self.other_frames = 0  # the node's own uplink frames seen (and skipped) meanwhile
        self.session = XferSession(
            node_id,
            self._send,
            self._recv,
            timeout_s=timeout_s,
            chunk_bytes=chunk_bytes,
            window=window,
        )

    async def aclose(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            # A vanished port is closed either way.
            with contextlib.suppress(OSError, serial.SerialException):
                await writer.wait_closed()

    # -- wire ----------------------------------------------------------------------------------

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            try:
                self._reader, self._writer = await serial_asyncio.open_serial_connection(
                    url=self.port, baudrate=self.baud
                )
            except (OSError, serial.SerialException) as exc:
                raise NodeUnreachable(
                    self._node_id, f"cannot open {self.port}: {exc}; is the node plugged in?"
                ) from exc
            self._decoder = FrameDecoder()
            self._payloads.clear()
        return self._reader, self._writer

    async def _send(self, payload: bytes) -> None:
        _, writer = await self._open()
        try:
            writer.write(encode_frame(payload))
            await writer.drain()
        except (OSError, serial.SerialException) as exc:
            await self.aclose()
            raise NodeUnreachable(self._node_id, f"write to {self.port} failed: {exc}") from exc

    async def _recv(self) -> bytes:
        reader, _ = await self._open()
        while not self._payloads:
            try:
                data = await reader.read(_READ_BYTES)
            except (OSError, serial.SerialException) as exc:
                await self.aclose()
                raise NodeUnreachable(self._node_id, f"read from {self.port}: {exc}") from exc
            if not data:
                await self.aclose()
                raise NodeUnreachable(self._node_id, f"{self.port} closed (node unplugged?)")
            for item in self._decoder.feed(data):
                if isinstance(item, bytes) and xfer.is_xfer_payload(item):
                    self._payloads.append(item)
                else:
                    self.other_frames += 1
        return self._payloads.popleft()
