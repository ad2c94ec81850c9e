"""SMP over serial for a simulated node: its second CDC-ACM interface, the "mgmt port".

A pty of its own (as :class:`~firmware_tools.sim.serial_link.PtySerialLink` has for data)
carrying the standard SMP serial framing of Zephyr's ``CONFIG_MCUMGR_TRANSPORT_UART`` /
shell transport: each SMP message becomes ``len(2) | message | crc16(2)``, base64-encoded and
split into lines that start with ``06 09`` (first) or ``04 14`` (continuation) and end in
``\\n``. The ``smp`` package's :func:`smp.packet.encode` / :func:`smp.packet.decode` do the
encoding; :class:`SmpLineDecoder` is the sans-IO reassembly around them.

Both directions run at the emulated baud rate (10 bits per byte): replies are written in
paced chunks, and a request is handed to the server only when its last byte would have
arrived on a real wire. While the node reboots (``os reset``) it does not listen; what
arrives meanwhile is lost, as on a UART during a reset.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import logging
import os
import struct
import tty
from collections.abc import Generator
from pathlib import Path

from smp import packet as smppacket
from smp.exceptions import SMPDecodeError

from firmware_tools.sim.smp_server import SmpServer

_LOGGER = logging.getLogger(__name__)
_BITS_PER_BYTE = 10
_READ_BYTES = 4096
# A timer fires a little late; bytes that follow within this much of the previous ones are
# back to back on the wire, or every late wake-up would slow the emulated line down (the same
# rule as PtySerialLink, so both paths of bench.flash run on the same wire).
_CONTINUOUS_S = 0.005
LINE_LENGTH = 128  # the SMP serial convention; Zephyr's console line buffer


class SmpLineDecoder:
    """Bytes from the wire -> complete SMP messages (header + CBOR).

    Non-SMP lines (console output) are skipped; damaged frames (bad base64, bad CRC, a
    continuation without a start) are dropped and counted in ``errors``. A line longer
    than ``max_line_bytes`` is discarded up to its newline, so the buffer stays bounded.
    """

    def __init__(self, max_line_bytes: int = 4 * LINE_LENGTH, max_frame_bytes: int = 65_535):
        self.errors = 0
        self._max_line = max_line_bytes
        self._max_frame = max_frame_bytes
        self._line = bytearray()
        self._skipping = False
        self._frame: Generator[None, bytes, bytes] | None = None

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                self._append(data[start:])
                return out
            self._append(data[start:end])
            line, skipped = bytes(self._line), self._skipping
            self._line.clear()
            self._skipping = False
            if not skipped:
                message = self._on_line(line + b"\n")
                if message is not None:
                    out.append(message)
            start = end + 1

    def _append(self, chunk: bytes) -> None:
        if self._skipping:
            return
        self._line.extend(chunk)
        if len(self._line) > self._max_line:
            self._line.clear()
            self._skipping = True
            self._frame = None
            self.errors += 1

    def _on_line(self, line: bytes) -> bytes | None:
        delimiter = line[: smppacket.DELIMITER_SIZE]
        if delimiter == smppacket.START_DELIMITER:
            if self._frame is not None:
                self.errors += 1  # the previous frame never completed
            self._frame = smppacket.decode()
            next(self._frame)
        elif delimiter != smppacket.CONTINUE_DELIMITER:
            return None  # console output between frames
        elif self._frame is None:
            self.errors += 1
            return None
        frame = self._frame
        try:
            frame.send(line)
        except StopIteration as done:
            self._frame = None
            return bytes(done.value)
        except (SMPDecodeError, binascii.Error, struct.error, ValueError):
            self._frame = None
            self.errors += 1
        return None


def encode_smp_lines(message: bytes, line_length: int = LINE_LENGTH) -> bytes:
    """One SMP message as the serial lines that carry it."""
    return b"".join(smppacket.encode(message, line_length=line_length))


class SmpSerialLink:
    """A node's SMP management port on a pty. ``await run()`` in a task; cancel to close."""

    kind = "smp-serial"

    def __init__(
        self,
        server: SmpServer,
        *,
        baud: int = 115_200,
        pty_dir: Path | None = None,
        chunk_bytes: int = 64,
    ) -> None:
        if baud <= 0 or chunk_bytes <= 0:
            raise ValueError("baud and chunk_bytes must be > 0")
        self.server = server
        self.node_id = server.node_id
        self.baud = baud
        self.chunk_bytes = chunk_bytes
        self.ready = asyncio.Event()
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.decoder = SmpLineDecoder()
        self.symlink = Path(pty_dir) / f"tty{self.node_id}-mgmt" if pty_dir is not None else None
        master, slave = os.openpty()
        # Raw before anyone opens it: no echo of our replies, no newline translation.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master: int | None = master
        self._slave: int | None = slave
        self.slave_path = os.ttyname(slave)
        if self.symlink is not None:
            self.symlink.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.symlink.unlink()
            self.symlink.symlink_to(self.slave_path)
        self._rx_free_at = 0.0
        self._tx_free_at = 0.0

    @property
    def address(self) -> str:
        """The path a host opens: the symlink if there is one, else the pty itself."""
        return str(self.symlink) if self.symlink is not None else self.slave_path

    def close(self) -> None:
        if self.symlink is not None:
            with contextlib.suppress(FileNotFoundError):
                self.symlink.unlink()
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        self.ready.clear()

    async def run(self) -> None:
        """Serve requests until cancelled; closes the pty on exit."""
        try:
            self.ready.set()
            while True:
                data = await self._read()
                loop = asyncio.get_running_loop()
                # The last of these bytes reaches a real UART this much later.
                now = loop.time()
                self._rx_free_at = _line_start(self._rx_free_at, now) + (
                    len(data) * _BITS_PER_BYTE / self.baud
                )
                await asyncio.sleep(self._rx_free_at - now)
                self.bytes_in += len(data)
                for message in self.decoder.feed(data):
                    await self._serve(message)
        finally:
            self.close()

    async def _serve(self, message: bytes) -> None:
        self.requests += 1
        reply = await asyncio.to_thread(self.server.handle, message)
        if reply.response:
            await self._write_paced(encode_smp_lines(reply.response))
        if reply.reset:
            _LOGGER.info("%s: mgmt reset", self.node_id)
            await asyncio.to_thread(self.server.reboot)
            self._drop_input()

    def _drop_input(self) -> None:
        assert self._master is not None
        with contextlib.suppress(BlockingIOError):
            while os.read(self._master, _READ_BYTES):
                pass
        self.decoder = SmpLineDecoder()
        self._rx_free_at = 0.0

    async def _read(self) -> bytes:
        assert self._master is not None
        fd = self._master
        loop = asyncio.get_running_loop()
        while True:
            try:
                return os.read(fd, _READ_BYTES)
            except BlockingIOError:
                pass
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _wake, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)

    async def _write_paced(self, data: bytes) -> None:
        assert self._master is not None
        fd = self._master
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            try:
                written = os.write(fd, view[: self.chunk_bytes])
            except BlockingIOError:
                # Nobody reads the port: wait as a UART with flow control would.
                writable: asyncio.Future[None] = loop.create_future()
                loop.add_writer(fd, _wake, writable)
                try:
                    await writable
                finally:
                    loop.remove_writer(fd)
                continue
            view = view[written:]
            self.bytes_out += written
            now = loop.time()
            self._tx_free_at = _line_start(self._tx_free_at, now) + (
                written * _BITS_PER_BYTE / self.baud
            )
            await asyncio.sleep(self._tx_free_at - now)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _line_start(free_at: float, now: float) -> float:
    """When the next bytes start on the wire: after the previous ones, or now if idle."""
    return free_at if now - free_at < _CONTINUOUS_S else now
