"""A simulated node on a real pty, read by a gateway-like client through pyserial-asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import serial_asyncio

from firmware_tools.sim.fleet import SimConfig, Simulator
from firmware_tools.sim.node import NodeConfig, NodeLogic
from firmware_tools.sim.serial_link import PtySerialLink
from firmware_tools.sim.signals import PUMP_CHANNELS
from gateway.protocol.framing import FrameDecoder, encode_frame
from gateway.protocol.messages import Ack, DownlinkMessage, ReadingBatch, Status, UplinkMessage
from gateway.protocol.payload import decode_message, encode_message


class GatewayPort:
    """The gateway's end of a node's serial port: decode frames, optionally ack them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()
        self.received: list[UplinkMessage] = []
        self.bytes_in = 0
        self.bad_frames = 0
        self.have: set[int] = set()  # seqs received (one node, one boot in these tests)
        self.contiguous = 0
        self.acking = True

    @classmethod
    async def open(cls, path: str, baud: int = 115_200) -> GatewayPort:
        reader, writer = await serial_asyncio.open_serial_connection(url=path, baudrate=baud)
        return cls(reader, writer)

    async def pump(self, seconds: float) -> None:
        """Read (and ack, if acking) for ``seconds``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while data := await self.reader.read(4096):
                    self.bytes_in += len(data)
                    for payload in self.decoder.feed(data):
                        if not isinstance(payload, bytes):
                            # Opening the port flushes its input, maybe mid-frame.
                            self.bad_frames += 1
                            continue
                        msg = decode_message(payload)
                        assert isinstance(msg, ReadingBatch | Status), msg
                        self.received.append(msg)
                        self.have.update(range(msg.seq, msg.last_seq + 1))
                        while self.contiguous + 1 in self.have:
                            self.contiguous += 1
                        if self.acking and self.contiguous:
                            # Like the journal: acknowledge only the gap-free prefix.
                            ack = Ack(msg.node_id, msg.boot_id, self.contiguous)
                            self.writer.write(encode_frame(encode_message(ack)))

    async def close(self) -> None:
        self.writer.close()
        await asyncio.sleep(0)  # let the transport release the fd


def link_target(path: str) -> str | None:
    """Where a symlink points, or None when it does not exist."""
    try:
        return os.readlink(path)
    except FileNotFoundError:
        return None


def fast_config(tmp_path: Path, **overrides: object) -> SimConfig:
    settings: dict[str, object] = {
        "nodes": 1,
        "rate_hz": 40.0,
        "batch_size": 4,
        "resend_timeout_ms": 300,
        "status_interval_ms": 60_000,
        "pty_dir": tmp_path,
        "seed": 1,
    }
    settings.update(overrides)
    return SimConfig(**settings)  # type: ignore[arg-type]


async def test_gateway_reads_frames_and_acks_stop_the_node_resending(tmp_path: Path) -> None:
    async with Simulator(fast_config(tmp_path)) as sim:
        await sim.wait_ready()
        _transport, path = sim.addresses()["pump-01"]
        assert (link_target(path) or "").startswith("/dev/pts/")
        port = await GatewayPort.open(path)
        try:
            await port.pump(1.2)
            node = sim.nodes["pump-01"]
            stats = node.stats()
            batches = [m for m in port.received if isinstance(m, ReadingBatch)]
            assert len(batches) >= 6
            assert port.bad_frames <= 1
            # Whatever the port flush at open swallowed was resent: from the boot
            # heartbeat on, every seq arrived.
            seqs = {s for m in port.received for s in range(m.seq, m.last_seq + 1)}
            assert seqs == set(range(1, max(seqs) + 1))
            assert stats["resent"] <= 4
            assert stats["unacked"] <= 2

            # The gateway goes quiet: the node resends what is not acknowledged.
            port.acking = False
            await port.pump(1.0)
            assert node.stats()["resent"] > 0
            resent_while_silent = node.stats()["resent"]

            # Acks again: everything is released and resending stops.
            port.acking = True
            await port.pump(0.8)
            after = node.stats()
            assert after["unacked"] <= 2
            assert after["resent"] - resent_while_silent <= 8  # a burst or two, then quiet
            assert after["link_bad_in"] == 0
        finally:
            await port.close()


async def test_writes_are_paced_to_the_baud_rate() -> None:
    baud = 115_200
    link = PtySerialLink("pace-01", baud=baud, chunk_bytes=64)
    logic = NodeLogic(NodeConfig("pace-01", PUMP_CHANNELS, batch_size=60, seed=3))
    msgs = [m for i in range(300) for m in logic.add_sample(i * 10, (1.0 + i, 2.0, 3.0, 4.0, 5.0))]
    frames = [encode_frame(encode_message(m)) for m in msgs]
    total = sum(len(f) for f in frames)
    assert total > 5_000

    port = await GatewayPort.open(link.slave_path, baud)
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(link.run(lambda _msg: None), name="sim:pace-01:link")
            started = time.monotonic()
            for msg in msgs:
                link.offer(msg)
            port.acking = False
            while len(port.received) < len(msgs):
                await port.pump(0.05)
                assert time.monotonic() - started < 5
            elapsed = time.monotonic() - started
            task.cancel()
    finally:
        await port.close()

    wire_time = total * 10 / baud
    assert elapsed >= 0.8 * wire_time, (elapsed, wire_time)
    assert elapsed <= wire_time + 1.0, (elapsed, wire_time)
    assert port.bytes_in == total


async def test_unplug_drops_the_port_and_replug_brings_it_back_on_the_same_path(
    tmp_path: Path,
) -> None:
    async with Simulator(fast_config(tmp_path)) as sim:
        await sim.wait_ready()
        link = sim.serial_link("pump-01")
        path = link.address
        port = await GatewayPort.open(path)
        try:
            await port.pump(0.3)
            assert port.received

            link.unplug()
            assert link_target(path) is None
            # The gateway's open port dies the way a yanked USB adapter does.
            lost = False
            try:
                async with asyncio.timeout(2):
                    while await port.reader.read(4096):
                        pass
                lost = True  # EOF
            except OSError:
                lost = True
            assert lost
        finally:
            await port.close()

        link.replug()
        assert (link_target(path) or "").startswith("/dev/pts/")
        port = await GatewayPort.open(path)
        try:
            await port.pump(0.8)
            assert port.received, "nothing arrived after replug"
            assert link.stats.connects == 2
        finally:
            await port.close()


async def test_large_gateway_write_does_not_leave_the_event_loop_spinning() -> None:
    """pyserial-asyncio-fast 0.16 busy-loops after a write bigger than the pty buffer."""
    # The node paces what it reads at the baud rate: 256 KiB needs a fast line to take < 1 s.
    link = PtySerialLink("spin-01", baud=4_000_000)
    received: list[DownlinkMessage] = []
    all_in = asyncio.Event()
    port = await GatewayPort.open(link.slave_path)
    ack_frame = encode_frame(encode_message(Ack("spin-01", 1, 1)))
    n_acks = 256 * 1024 // len(ack_frame)

    def on_downlink(msg: DownlinkMessage) -> None:
        received.append(msg)
        if len(received) == n_acks:
            all_in.set()

    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(link.run(on_downlink), name="sim:spin-01:link")
            await asyncio.sleep(0)
            port.writer.write(ack_frame * n_acks)  # far beyond the pty's few KB
            async with asyncio.timeout(10):
                await port.writer.drain()
                await all_in.wait()

            cpu_before, wall_before = time.process_time(), time.monotonic()
            await asyncio.sleep(1.0)  # idle: nothing to read, nothing to write
            cpu = time.process_time() - cpu_before
            wall = time.monotonic() - wall_before
            task.cancel()
    finally:
        await port.close()

    assert len(received) == n_acks
    assert link.stats.bad_in == 0
    assert cpu < 0.3 * wall, f"event loop burned {cpu:.2f} s CPU in {wall:.2f} s idle"
