"""One soak run: start everything, inject faults, heal, drain, check, report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.soak import checker
from bench.soak.faults import FaultLog, Faults
from bench.soak.monitor import Monitor
from bench.soak.stack import INTERVAL_S, LATE_GRACE_S, SITE, FleetShape, Stack

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    duration_s: float
    shape: FleetShape
    seed: int
    report_dir: Path | None
    keep: bool
    faults: frozenset[str] | None = None  # None: every kind


@contextlib.contextmanager
def data_disk(workdir: Path, size: str = "64m") -> Iterator[tuple[Path, bool]]:
    """A tmpfs for the gateway's data (the disk fault fills it); a plain dir where mounting
    is not allowed (and no disk fault)."""
    where = workdir / "disk"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    try:
        yield where / "var", done.returncode == 0
    finally:
        if done.returncode == 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


async def _settle(stack: Stack, timeout_s: float) -> None:
    """Faults over: let nodes resend until (almost) nothing is unacknowledged."""
    deadline = time.monotonic() + timeout_s
    n_nodes = sum(len(s.nodes) for s in stack.sims)
    # Polls the simulator's own state (nothing to wait on): noqa below.
    while time.monotonic() < deadline and stack.unacked_messages() > 2 * n_nodes:  # noqa: ASYNC110
        await asyncio.sleep(0.5)


async def _drained(stack: Stack, mon: Monitor, timeout_s: float) -> bool:
    """Sampling stopped: wait until every interval holding a reading has closed and the
    backlog is empty (everything forwarded or accounted for)."""
    deadline = time.monotonic() + timeout_s
    await asyncio.sleep(INTERVAL_S + LATE_GRACE_S)
    while time.monotonic() < deadline:
        s = mon.samples[-1] if mon.samples else None
        if s is not None and s.backlog_points == 0 and s.readings > 0:
            closed = await asyncio.to_thread(_closed_all, stack)
            if closed:
                return True
        await asyncio.sleep(1.0)
    return False


def _closed_all(stack: Stack) -> bool:
    import sqlite3

    try:
        j = sqlite3.connect(f"file:{stack.journal}?mode=ro", uri=True, timeout=5)
        b = sqlite3.connect(f"file:{stack.backlog}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return False
    try:
        (newest,) = j.execute("SELECT coalesce(max(ts_ms), 0) FROM readings").fetchone()
        row = b.execute("SELECT value FROM state WHERE key = 'closed_before_ms'").fetchone()
        return row is not None and int(json.loads(row[0])) > newest
    except sqlite3.Error:
        return False
    finally:
        j.close()
        b.close()


def _copy_db(src: Path, dst: Path) -> None:
    import sqlite3

    with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as a, sqlite3.connect(dst) as b:
        a.backup(b)


async def soak(opts: Options) -> dict[str, object]:
    rng = random.Random(opts.seed)
    with tempfile.TemporaryDirectory(prefix="fieldgate-soak-") as tmp:
        workdir = Path(tmp)
        with data_disk(workdir) as (data_dir, disk_ok):
            stack = Stack(workdir, data_dir, opts.shape)
            log = FaultLog()
            async with stack.running():
                mon = Monitor(stack)
                async with asyncio.TaskGroup() as tg:
                    sampler = tg.create_task(mon.run(), name="soak:monitor")
                    await stack.gateway.running.wait()
                    await asyncio.sleep(8)  # sources up, first readings committed
                    print(f"soak: {len(stack.serial_nodes)} serial, "
                          f"{opts.shape.mqtt} mqtt, {len(stack.ble_nodes)} ble nodes at "
                          f"{opts.shape.rate_hz:g} Hz; faults for {opts.duration_s:g} s"
                          + ("" if disk_ok else " (no tmpfs: no disk fault)"), flush=True)  # fmt: skip
                    faults = Faults(stack, log, rng, disk=disk_ok, only=opts.faults)
                    await faults.run(time.monotonic() + opts.duration_s)
                    await _settle(stack, 60)
                    stack.stop_sampling()
                    drained = await _drained(stack, mon, 120)
                    sampler.cancel()
                await stack.gateway.stop()
                journal = await asyncio.to_thread(checker.journal_readings, stack.journal)
                verdict = checker.check(
                    checker.emitted_keys(stack.sims),
                    stack.taps.acked,
                    journal,
                    await asyncio.to_thread(checker.store_samples, stack.vm, SITE),
                    accounted=await asyncio.to_thread(checker.accounted, stack.backlog),
                    resendable=log.resendable,
                )
                doubles = await asyncio.to_thread(
                    checker.store_duplicates_by_series, stack.vm, SITE
                )
                growth = mon.rss_growth(stack.gateway.lives)
                if opts.keep:
                    kept = Path(tempfile.mkdtemp(prefix="fieldgate-soak-logs-"))
                    for src in (workdir / "gateway.log", workdir / "gateway.toml"):
                        (kept / src.name).write_bytes(src.read_bytes())
                    for db in (stack.journal, stack.backlog):
                        _copy_db(db, kept / db.name)
                    store = await asyncio.to_thread(checker.store_samples, stack.vm, SITE)
                    (kept / "store.json").write_text(
                        json.dumps([[*k, v] for k, v in store.items()])
                    )
                    (kept / "resendable.json").write_text(json.dumps(sorted(log.resendable)))
                    print(f"logs kept in {kept}")
            result: dict[str, object] = {
                "duration_s": opts.duration_s,
                "drained": drained,
                "faults": log.count(),
                "faults_skipped": sorted(log.skipped),
                "gateway_starts": stack.gateway.starts,
                "gateway_kills": stack.gateway.kills,
                "gateway_unexpected_exits": stack.gateway.unexpected_exits,
                "verdict": {
                    **asdict(verdict),
                    "lost": verdict.lost,
                    "unexpected": verdict.unexpected,
                },
                "doubles_by_measurement": dict(doubles),
                "growth": growth,
            }
            if opts.report_dir is not None:
                from bench.soak.report import write_report

                write_report(
                    opts.report_dir,
                    result=result,
                    samples=mon.samples,
                    journal=journal,
                    faults=log.events,
                    stack=stack,
                )
            return result
