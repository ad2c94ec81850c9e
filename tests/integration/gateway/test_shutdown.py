"""``run_until_signalled``: SIGTERM drains the gateway within ``shutdown_grace_s``; a component
wedged past the grace period (here: a journal commit stuck on a "disk" that never answers)
makes it give up and call ``on_overrun`` instead of hanging the process."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

from gateway.app import Gateway, run_until_signalled
from gateway.ingest import Envelope
from gateway.protocol.messages import Channel, ReadingBatch, Sample, TimeBase, Transport
from tests.fixtures.gateway import gateway_config, journal_keys

GRACE_S = 1.0


def envelope(seq: int) -> Envelope:
    msg = ReadingBatch(
        "pump-01", 1, seq, TimeBase.UPTIME_MS, (Channel("current", "A"),),
        (Sample(1000 + seq, (2.5,)),),
    )  # fmt: skip
    return Envelope(msg, Transport.SERIAL, int(time.time() * 1000))


def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    return gateway_config(tmp_path, shutdown_grace_s=GRACE_S, scoring={"enabled": False})


async def test_sigterm_drains_and_stops_within_the_grace_period(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    gateway = Gateway(cfg)
    overruns: list[float] = []
    runner = asyncio.create_task(
        run_until_signalled(gateway, on_overrun=lambda: overruns.append(time.monotonic())),
        name="test:run_until_signalled",
    )
    async with asyncio.timeout(15):
        await gateway.writer.ready.wait()
    for seq in (1, 2, 3):
        assert await gateway.queue.put(envelope(seq))

    os.kill(os.getpid(), signal.SIGTERM)
    started = time.monotonic()
    async with asyncio.timeout(GRACE_S + 5):
        await runner
    elapsed = time.monotonic() - started

    assert overruns == []
    assert elapsed < GRACE_S
    # What the source had handed over before the signal is committed, not lost.
    assert journal_keys(cfg) == [("pump-01", 1, 1), ("pump-01", 1, 2), ("pump-01", 1, 3)]


async def test_a_component_hung_past_the_grace_period_triggers_on_overrun(
    tmp_path: Path,
) -> None:
    gateway = Gateway(config(tmp_path))
    commit = gateway.journal.commit
    in_commit, disk_back = threading.Event(), threading.Event()

    def wedged_commit(batch: list[Envelope]):  # type: ignore[no-untyped-def]
        in_commit.set()
        disk_back.wait(30)  # an fsync that does not return
        return commit(batch)

    gateway.journal.commit = wedged_commit  # type: ignore[method-assign,assignment]
    overrun = asyncio.Event()
    runner = asyncio.create_task(
        run_until_signalled(gateway, on_overrun=overrun.set), name="test:run_until_signalled"
    )
    try:
        async with asyncio.timeout(15):
            await gateway.writer.ready.wait()
        assert await gateway.queue.put(envelope(1))
        await asyncio.to_thread(in_commit.wait, 10)

        os.kill(os.getpid(), signal.SIGTERM)
        started = time.monotonic()
        async with asyncio.timeout(GRACE_S + 5):
            await runner  # returns once it gave up on the drain
        elapsed = time.monotonic() - started
        assert overrun.is_set()
        assert GRACE_S <= elapsed < GRACE_S + 1.0
        service = next(t for t in asyncio.all_tasks() if t.get_name() == "gateway")
        assert not service.done()  # still stuck in the commit: exiting was the only way out
    finally:
        # The disk answers again: the gateway finishes its shutdown (no thread left behind).
        disk_back.set()
        for task in asyncio.all_tasks():
            if task.get_name() == "gateway":
                async with asyncio.timeout(10):
                    await asyncio.wait({task})
        if not runner.done():
            runner.cancel()
