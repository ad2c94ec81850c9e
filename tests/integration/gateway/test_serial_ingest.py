"""Serial nodes over real pseudo-terminals: frames in, acks out, garbage and unplugs survived."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Iterator
from pathlib import Path

from gateway.protocol.framing import FrameDecoder, encode_frame
from gateway.protocol.messages import Ack, Channel, ReadingBatch, Sample, TimeBase
from gateway.protocol.payload import decode_message, encode_message
from tests.fixtures.gateway import gateway_config, journal_keys, running_gateway, wait_until

CH = (Channel("pressure", "bar"), Channel("flow", "l/min"))


def batch(seq: int, n: int = 5, node: str = "ser-1", boot: int = 3) -> ReadingBatch:
    samples = tuple(Sample(10 * (seq + i), (1.0, float(seq + i))) for i in range(n))
    return ReadingBatch(node, boot, seq, TimeBase.UPTIME_MS, CH, samples)


class FakeWire:
    """The node end of a pty, reachable by the gateway through a stable symlink path.

    ``unplug`` closes the pty (the gateway's port errors out) and removes the link;
    ``replug`` opens a new pty and points the same path at it, like a USB device
    re-enumerating under /dev/serial/by-id.
    """

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.replug()

    def replug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        slave_path = os.ttyname(slave)
        os.close(slave)
        self.master = master
        tmp = self.link.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(slave_path)
        tmp.replace(self.link)

    def unplug(self) -> None:
        self.link.unlink(missing_ok=True)
        os.close(self.master)
        self.master = -1

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def read_acks(self, decoder: FrameDecoder) -> list[Ack]:
        os.set_blocking(self.master, False)
        acks = []
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(self.master, 4096):
                for item in decoder.feed(chunk):
                    if isinstance(item, bytes):
                        msg = decode_message(item)
                        assert isinstance(msg, Ack)
                        acks.append(msg)
        return acks


@contextlib.contextmanager
def wire(tmp_path: Path) -> Iterator[FakeWire]:
    w = FakeWire(tmp_path / "ttyNODE")
    try:
        yield w
    finally:
        if w.master >= 0:
            w.unplug()


def serial_cfg(tmp_path: Path, path: Path):  # type: ignore[no-untyped-def]
    return gateway_config(
        tmp_path, serial={"ports": [{"path": str(path), "baud": 115200}], "reopen_interval_s": 0.05}
    )


async def test_frames_are_journaled_and_acked_on_the_same_port(tmp_path: Path) -> None:
    with wire(tmp_path) as w:
        cfg = serial_cfg(tmp_path, w.link)
        async with running_gateway(cfg):
            for seq in (1, 6, 11):
                w.send(encode_frame(encode_message(batch(seq))))
            await wait_until(lambda: len(journal_keys(cfg)) == 15, what="15 readings")
            decoder = FrameDecoder()
            acks: list[Ack] = []

            def got_final_ack() -> bool:
                acks.extend(w.read_acks(decoder))
                return bool(acks) and acks[-1].up_to_seq == 15

            await wait_until(got_final_ack, what="ack up to 15")
    assert acks[-1] == Ack("ser-1", 3, 15)
    assert sorted(journal_keys(cfg)) == [("ser-1", 3, s) for s in range(1, 16)]


async def test_garbage_and_oversized_frames_are_counted_and_ingest_resyncs(tmp_path: Path) -> None:
    with wire(tmp_path) as w:
        cfg = serial_cfg(tmp_path, w.link)
        async with running_gateway(cfg) as gw:
            w.send(os.urandom(300) + b"\x00")
            w.send(encode_frame(encode_message(batch(1)))[:-3] + b"\x00")  # truncated frame
            w.send(b"\x01" * 10_000 + b"\x00")  # oversized: longer than max_frame_bytes
            bad_crc = bytearray(encode_frame(encode_message(batch(1))))
            bad_crc[5] ^= 0x55
            w.send(bytes(bad_crc))
            w.send(encode_frame(b"\xa1\x00\x63\x6f\x6b"))  # a valid frame, not a message
            w.send(encode_frame(encode_message(batch(1))))
            await wait_until(lambda: len(journal_keys(cfg)) == 5, what="the good batch")
            assert sum(gw.metrics.malformed.values()) >= 4
            assert gw.sources[0].ready.is_set()


async def test_unplugged_port_is_reopened_and_nothing_is_lost_or_doubled(tmp_path: Path) -> None:
    with wire(tmp_path) as w:
        cfg = serial_cfg(tmp_path, w.link)
        async with running_gateway(cfg) as gw:
            source = gw.sources[0]
            w.send(encode_frame(encode_message(batch(1))))
            await wait_until(lambda: len(journal_keys(cfg)) == 5, what="first batch")
            w.unplug()
            await wait_until(lambda: not source.ready.is_set(), what="gateway noticing unplug")
            await asyncio.sleep(0.2)  # the port stays away for a while
            w.replug()
            await wait_until(source.ready.is_set, what="gateway reopening the port")
            # The node never saw an ack for batch 1 (say) and resends it with batch 6.
            w.send(encode_frame(encode_message(batch(1))) + encode_frame(encode_message(batch(6))))
            await wait_until(lambda: len(journal_keys(cfg)) == 10, what="second batch")
            assert gw.metrics.duplicates["serial"] == 5
    assert sorted(journal_keys(cfg)) == [("ser-1", 3, s) for s in range(1, 11)]
