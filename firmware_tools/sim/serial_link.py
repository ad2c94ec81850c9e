"""A node on a serial port: a pseudo-terminal whose far end the gateway opens.

The node owns the pty master; the gateway opens the slave (``/dev/pts/N``, or a
stable symlink to it) like any USB serial adapter. Frames are COBS+CRC
(:mod:`gateway.protocol.framing`) around the CBOR messages.

Ptys move bytes as fast as memory does and ignore the baud rate, so both
directions are paced here. Writes: at most ``chunk_bytes`` at a time, each
followed by the time those bytes take on a real wire (10 bits per byte: start,
8 data, stop). Reads: at most ``chunk_bytes`` are taken from the pty, handed on
only once they could have arrived at the baud rate, and the pty is not read
again before then, so a fast writer on the far end fills the pty and blocks, as
with hardware flow control. The link also
keeps the slave side open itself, so bytes written while no gateway has the port
open wait in the pty (as in a USB CDC device's buffer) instead of failing.

Frames whose payload starts with 0xFC belong to the model transfer
(:mod:`gateway.protocol.xfer`); they go to the node's :class:`XferNode`, one
at a time in the link's own task, and its replies share the paced writer with
the uplink messages.

``unplug()`` closes the pty, which the gateway sees as a vanished device (EIO),
and removes the symlink; ``replug()`` makes a new pty and points the symlink at
it, so a gateway configured with the symlink path finds the node again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from pathlib import Path

from firmware_tools.sim.links import DownlinkHandler, LinkStats, Outbox
from firmware_tools.sim.xfer_node import XferNode
from gateway.errors import CodecError
from gateway.protocol.framing import FrameDecoder, encode_frame
from gateway.protocol.messages import Ack, Command, UplinkMessage
from gateway.protocol.payload import decode_message, encode_message
from gateway.protocol.xfer import is_xfer_payload

_LOGGER = logging.getLogger(__name__)
_BITS_PER_BYTE = 10
_XFER_QUEUE = 64
# A timer fires a little late; bytes that follow within this much of the previous ones are
# taken as back to back on the wire, or every late wake-up would slow the line down.
_CONTINUOUS_S = 0.005  # more than any sender's window: the node never drops a windowed chunk


class PtySerialLink:
    """One node's serial port. Create, then ``await run(handler)`` in a task."""

    kind = "serial"

    def __init__(
        self,
        node_id: str,
        *,
        baud: int = 115_200,
        pty_dir: Path | None = None,
        chunk_bytes: int = 64,
        queue_size: int = 256,
        max_frame_bytes: int = 4096,
        xfer: XferNode | None = None,
    ) -> None:
        if baud <= 0 or chunk_bytes <= 0:
            raise ValueError("baud and chunk_bytes must be > 0")
        self.node_id = node_id
        self.baud = baud
        self.chunk_bytes = chunk_bytes
        self.stats = LinkStats()
        self.ready = asyncio.Event()
        self.symlink = Path(pty_dir) / f"tty{node_id}" if pty_dir is not None else None
        self._outbox = Outbox(self.stats, queue_size)
        self._max_frame_bytes = max_frame_bytes
        self._decoder = FrameDecoder(max_frame_bytes)
        self._master: int | None = None
        self._slave: int | None = None
        self.slave_path = ""
        self._handler: DownlinkHandler | None = None
        self._writable: asyncio.Future[None] | None = None
        self._tx_free_at = 0.0
        self._rx_free_at = 0.0
        self._rx_pending: asyncio.TimerHandle | None = None
        self._tx_lock = asyncio.Lock()
        self.xfer = xfer
        self._xfer_in: asyncio.Queue[bytes] = asyncio.Queue(_XFER_QUEUE)
        self.xfer_dropped = 0
        self._plug()

    @property
    def address(self) -> str:
        """The path a gateway should open: the stable symlink if there is one."""
        return str(self.symlink) if self.symlink is not None else self.slave_path

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def offer(self, msg: UplinkMessage) -> None:
        self._outbox.put(msg)

    def unplug(self) -> None:
        """Pull the cable: the pty goes away and the symlink with it."""
        if self._master is None:
            return
        _LOGGER.info("%s: unplugged %s", self.node_id, self.slave_path)
        self.ready.clear()
        if self.symlink is not None:
            with contextlib.suppress(FileNotFoundError):
                self.symlink.unlink()
        if self._rx_pending is not None:
            self._rx_pending.cancel()
            self._rx_pending = None
        if self._handler is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._master)
            loop.remove_writer(self._master)
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ConnectionResetError("unplugged"))
        os.close(self._master)
        if self._slave is not None:
            os.close(self._slave)
        self._master = self._slave = None

    def replug(self) -> None:
        """Plug back in: a new pty (new /dev/pts/N), the symlink now pointing at it."""
        if self._master is None:
            self._plug()

    def close(self) -> None:
        self.unplug()

    async def run(self, on_downlink: DownlinkHandler) -> None:
        """Write paced frames and read downlink frames until cancelled; closes the pty on exit."""
        self._handler = on_downlink
        loop = asyncio.get_running_loop()
        if self._master is not None:
            loop.add_reader(self._master, self._on_readable)
            self.ready.set()
        try:
            async with asyncio.TaskGroup() as tg:
                if self.xfer is not None:
                    tg.create_task(self._xfer_loop(self.xfer), name=f"sim:{self.node_id}:xfer")
                await self._uplink_loop()
        finally:
            self.close()
            self._handler = None

    async def _uplink_loop(self) -> None:
        while True:
            msg = await self._outbox.get()
            if self._master is None:
                self.stats.dropped += 1  # nobody on the wire: the node will resend
                continue
            if await self._send_frame(encode_frame(encode_message(msg))):
                self.stats.messages_out += 1
            else:
                self.stats.dropped += 1

    async def _xfer_loop(self, xfer: XferNode) -> None:
        while True:
            payload = await self._xfer_in.get()
            for reply in await xfer.handle_async(payload):
                # A lost reply is the host's to retry (it times out and asks again).
                await self._send_frame(encode_frame(reply))

    async def _send_frame(self, frame: bytes) -> bool:
        """Write one frame, paced, never interleaved with another; False if it failed."""
        async with self._tx_lock:
            if self._master is None:
                return False
            try:
                await self._write_paced(frame)
            except OSError as exc:
                _LOGGER.debug("%s: write failed: %s", self.node_id, exc)
                return False
        self.stats.bytes_out += len(frame)
        return True

    # -- internals -------------------------------------------------------------------------

    def _plug(self) -> None:
        master, slave = os.openpty()
        # Raw mode before anyone opens it: no echo of our own frames back to the master, no
        # newline translation mangling binary frames.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.slave_path = os.ttyname(slave)
        self._decoder = FrameDecoder(self._max_frame_bytes)
        if self.symlink is not None:
            self.symlink.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.symlink.with_name(self.symlink.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.slave_path)
            tmp.replace(self.symlink)  # atomic: the path never points at a dead pty
        self.stats.connects += 1
        if self._handler is not None:
            asyncio.get_running_loop().add_reader(master, self._on_readable)
            self.ready.set()
        _LOGGER.info("%s: serial port %s", self.node_id, self.address)

    async def _write_paced(self, frame: bytes) -> None:
        loop = asyncio.get_running_loop()
        view = memoryview(frame)
        while view:
            if self._master is None:
                raise ConnectionResetError("unplugged")
            chunk = view[: self.chunk_bytes]
            try:
                written = os.write(self._master, chunk)
            except BlockingIOError:
                # The pty is full: nobody is reading. Wait, as flow control would make us.
                await self._wait_writable(loop)
                continue
            view = view[written:]
            now = loop.time()
            self._tx_free_at = _line_start(self._tx_free_at, now) + (
                written * _BITS_PER_BYTE / self.baud
            )
            await asyncio.sleep(self._tx_free_at - now)

    async def _wait_writable(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._master is not None
        fd = self._master
        writable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not writable.done():
                writable.set_result(None)

        self._writable = writable
        loop.add_writer(fd, wake)
        try:
            await writable
        finally:
            self._writable = None
            if self._master == fd:  # else unplug already closed (and unregistered) it
                loop.remove_writer(fd)

    def _on_readable(self) -> None:
        assert self._master is not None
        fd = self._master
        try:
            data = os.read(fd, self.chunk_bytes)
        except BlockingIOError:
            return
        except OSError:
            # EIO: no slave open anywhere (cannot happen while we hold ours); treat as unplug.
            self.unplug()
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._rx_free_at = _line_start(self._rx_free_at, now) + (
            len(data) * _BITS_PER_BYTE / self.baud
        )
        # Leave the rest in the pty until these bytes could have crossed the wire.
        loop.remove_reader(fd)
        self._rx_pending = loop.call_at(self._rx_free_at, self._rx_arrived, fd, data)

    def _rx_arrived(self, fd: int, data: bytes) -> None:
        self._rx_pending = None
        if self._master != fd:
            return  # unplugged meanwhile: the bytes went with the cable
        if self._handler is not None:
            asyncio.get_running_loop().add_reader(fd, self._on_readable)
        for item in self._decoder.feed(data):
            if isinstance(item, CodecError):
                self.stats.bad_in += 1
                continue
            if is_xfer_payload(item):
                self._on_xfer(item)
                continue
            try:
                msg = decode_message(item)
            except CodecError:
                self.stats.bad_in += 1
                continue
            if not isinstance(msg, Ack | Command):
                self.stats.bad_in += 1  # an uplink message has no business coming down
                continue
            self.stats.messages_in += 1
            if self._handler is not None:
                self._handler(msg)

    def _on_xfer(self, payload: bytes) -> None:
        if self.xfer is None:
            self.stats.bad_in += 1  # this node has no model slots
            return
        try:
            self._xfer_in.put_nowait(payload)
        except asyncio.QueueFull:
            self.xfer_dropped += 1  # the sender times out and resends


def _line_start(free_at: float, now: float) -> float:
    """When the next bytes start on the wire: after the previous ones, or now if idle."""
    return free_at if now - free_at < _CONTINUOUS_S else now
