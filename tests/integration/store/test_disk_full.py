"""The journal's disk fills up: the gateway degrades instead of crashing, and recovers.

Written as the fault: the data directory is a 4 MB tmpfs, mostly taken by a filler file.
Before: the COMMIT failed, the ROLLBACK in the except path raised "cannot rollback" (hiding
the cause) and the TaskGroup took the whole gateway down, local alerting included.
Now nothing is acknowledged while the disk is full (the node keeps its data), a local alert
is raised through the in-process stream, and once space returns everything the node resends
lands exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.events import AlertEvent, AlertEventKind
from gateway.ingest import Envelope
from gateway.protocol.messages import Ack, Channel, ReadingBatch, Sample, TimeBase, Transport
from tests.fixtures.gateway import gateway_config, journal_keys, running_gateway, wait_until
from tests.fixtures.tmpfs import mounted_tmpfs

pytestmark = pytest.mark.timeout(90)
CHANNELS = (Channel("current", "A"), Channel("pressure", "bar"), Channel("flow", "l/min"))
SAMPLES = 40


class Node:
    """A node that keeps what is not acknowledged and resends it, as real nodes do."""

    def __init__(self) -> None:
        self.acked = 0
        self.sent = 0

    def send_ack(self, ack: Ack) -> None:
        self.acked = max(self.acked, ack.up_to_seq)

    def batch(self, seq: int) -> Envelope:
        samples = tuple(
            Sample(t=seq * 1000 + i, values=(float(i), float(seq), os.urandom(1)[0] / 7))
            for i in range(SAMPLES)
        )
        msg = ReadingBatch("pump-01", 9, seq, TimeBase.UPTIME_MS, CHANNELS, samples)
        return Envelope(msg, Transport.SERIAL, 1_000_000 + seq, self)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tiny", "4m") as mount:
        yield mount


async def test_a_full_disk_stops_acks_raises_an_alert_and_recovers(tiny_disk: Path) -> None:
    cfg = gateway_config(
        tiny_disk,
        scoring={"enabled": False},
        alerts={"use_default_rules": False},
        queue={"max_messages": 20},
    )
    node = Node()
    events: list[AlertEvent] = []
    async with running_gateway(cfg) as gw:
        subscription = gw.alert_bus.subscribe(100)

        async def collect() -> None:
            async for item in subscription:
                if isinstance(item, AlertEvent):
                    events.append(item)

        collector = asyncio.create_task(collect())
        filler = tiny_disk / "filler"
        free = os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize
        filler.write_bytes(b"\0" * (free - 300_000))

        async def send_until_acked(last: int, *, stop_on_fault: bool = False) -> None:
            """Send seqs 1..last, resending what is unacknowledged, until all are acked."""
            while node.acked < last:
                for seq in range(node.acked + 1, last + 1):
                    if stop_on_fault and gw.writer.fault is not None:
                        return
                    try:
                        await asyncio.wait_for(gw.queue.put(node.batch(seq)), 0.2)
                    except TimeoutError:
                        break  # the queue is full: the gateway pushes back
                await asyncio.sleep(0.2)

        # Write until the disk refuses.
        await asyncio.wait_for(send_until_acked(10_000, stop_on_fault=True), 30)
        assert gw.writer.fault is not None, "the disk never filled"
        await wait_until(lambda: len(events) >= 1, what="the storage alert")
        raised = events[0]
        assert raised.kind is AlertEventKind.RAISED
        assert raised.alert.rule == "journal_storage"
        assert "full" in raised.alert.message or "disk" in raised.alert.message
        # Acknowledged means durable, also at the edge of a full disk.
        committed = {seq for _, _, seq in journal_keys(cfg)}
        assert set(range(1, node.acked + 1)) <= committed
        acked_at_fault = node.acked
        await asyncio.sleep(1.0)
        assert node.acked == acked_at_fault, "nothing is acknowledged while the disk is full"
        assert gw.writer.fault is not None

        # Space returns: the writer resumes by itself and the node's resends land once.
        filler.unlink()
        target = acked_at_fault + 30
        await asyncio.wait_for(send_until_acked(target), 30)
        await wait_until(lambda: gw.writer.fault is None, what="recovery")
        await wait_until(lambda: len(events) >= 2, what="the storage alert cleared")
        assert events[1].kind is AlertEventKind.CLEARED
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        subscription.close()
    # Every seq once, none missing (seqs sent ahead of the fault and queued land too).
    seqs = sorted(seq for _, _, seq in journal_keys(cfg))
    assert seqs == list(range(1, max(seqs) + 1))
    assert max(seqs) >= target
