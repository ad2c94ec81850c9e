"""Serial source: one task per port, COBS frames in, ack frames out, reopen on unplug.

pyserial-asyncio (not -fast: 0.16 spins the CPU after a write larger than the pty
buffer, upstream PR #36). A port that disappears (USB unplug, pty closed) ends the
connection with an OS error or EOF; the loop waits ``reopen_interval_s`` and tries
the same path again until it reappears.
"""

from __future__ import annotations

import asyncio
import logging

import serial
import serial_asyncio

from gateway.aio_compat import being_cancelled
from gateway.config import SerialConfig, SerialPortConfig
from gateway.downlink import Downlinks, LinkReach
from gateway.identity.config import serial_channel
from gateway.identity.gate import NodeGate
from gateway.ingest import Envelope, IngestQueue
from gateway.metrics import Metrics
from gateway.protocol.framing import FrameDecoder, encode_frame
from gateway.protocol.messages import Command, Transport
from gateway.protocol.payload import encode_message
from gateway.sources.common import AckMailbox, Admission, CommandOutbox, now_ms

_LOGGER = logging.getLogger(__name__)
_READ_CHUNK = 4096


class SerialSource:
    def __init__(
        self,
        port: SerialPortConfig,
        config: SerialConfig,
        queue: IngestQueue,
        metrics: Metrics,
        allowed_nodes: frozenset[str] = frozenset(),
        *,
        downlinks: Downlinks | None = None,
        gate: NodeGate | None = None,
    ) -> None:
        self._port = port
        self._reach = LinkReach(downlinks, self)
        self._config = config
        self._queue = queue
        self._admission = Admission(Transport.SERIAL, metrics, allowed_nodes, gate)
        self._mailbox = AckMailbox()
        self.ready = asyncio.Event()
        self.opens = 0
        self.decoder = FrameDecoder(max_frame_bytes=config.max_frame_bytes)
        self._commands = CommandOutbox(f"serial {self._port.path}", 64)

    @property
    def name(self) -> str:
        return f"source:serial:{self._port.path}"

    def send_command(self, command: Command) -> bool:
        """Queue a command frame for the node on this port (sent by the writer task);
        False while the port is closed or when 64 commands are already waiting."""
        return self.ready.is_set() and self._commands.offer(command)

    async def run(self) -> None:
        announced_missing = False
        while True:
            try:
                reader, writer = await serial_asyncio.open_serial_connection(
                    url=self._port.path, baudrate=self._port.baud
                )
            except (serial.SerialException, OSError) as exc:
                if not announced_missing:
                    _LOGGER.warning("%s: cannot open (%s); retrying", self._port.path, exc)
                    announced_missing = True
                await asyncio.sleep(self._config.reopen_interval_s)
                continue
            announced_missing = False
            self.opens += 1
            self.ready.set()
            _LOGGER.info("%s: open at %d baud", self._port.path, self._port.baud)
            # A new connection starts mid-stream: drop any half frame from the last one.
            self.decoder = FrameDecoder(max_frame_bytes=self._config.max_frame_bytes)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._write_loop(writer), name=f"{self.name}:acks")
                    await self._read_loop(reader)
                    raise ConnectionResetError("port closed")  # EOF: the device went away
            except* (serial.SerialException, OSError) as group:
                if being_cancelled():
                    raise asyncio.CancelledError from None
                _LOGGER.warning("%s: lost (%s); reopening", self._port.path, group.exceptions[0])
            finally:
                self.ready.clear()
                writer.close()
                self._forget_nodes()
            await asyncio.sleep(self._config.reopen_interval_s)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        where = self._port.path
        channel = serial_channel(where)
        while data := await reader.read(_READ_CHUNK):
            rx = now_ms()
            for item in self.decoder.feed(data):
                msg = self._admission.accept_frame(item, where, channel)
                if msg is not None:
                    await self._queue.put(Envelope(msg, Transport.SERIAL, rx, self._mailbox))

    def _forget_nodes(self) -> None:
        self._reach.forget_all()
        self._commands.drop_all()

    async def _write_loop(self, writer: asyncio.StreamWriter) -> None:
        async def acks() -> None:
            while True:
                for ack in await self._mailbox.take():
                    self._reach.note(ack.node_id)
                    writer.write(encode_frame(encode_message(ack)))
                await writer.drain()

        async def commands() -> None:
            while True:
                cmd = await self._commands.get()
                writer.write(encode_frame(encode_message(cmd)))
                await writer.drain()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(acks(), name=f"{self.name}:ack-writer")
            tg.create_task(commands(), name=f"{self.name}:cmd-writer")
