"""kill -9 of the gateway process while it drains its backlog: nothing lost, nothing doubled.

The gateway runs as a real process (``python -m gateway.cli run``) with a backlog of
distinct summary points waiting in its forward.db, draining into a real VictoriaMetrics
(no dedup: a resent point would be stored twice). The test SIGKILLs it three times
mid-drain, then lets it finish. A 2xx and the checkpoint that follows it are two steps, so
a kill between them may resend the one batch that was in flight: the store overwrites such
a point by its identity (InfluxDB; VictoriaMetrics with dedup), and the test allows a
double only there — never elsewhere, and never a missing point.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from gateway.forward.backlog import Backlog
from gateway.forward.points import SUMMARY, point
from tests.fixtures.servers import VictoriaMetrics
from tests.fixtures.victoria import samples_per_identity

POINTS = 12_000
BATCH = 400
BASE_MS = 1_700_000_000_000


def _checkpoint(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT max(through_id) FROM checkpoints").fetchone()
        return int(row[0] or 0)


def _waiting(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM points").fetchone()[0])


def _start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_sigkill_during_drain_loses_nothing_and_doubles_only_the_batch_in_flight(
    tmp_path: Path, own_victoria: VictoriaMetrics
) -> None:
    forward_db = tmp_path / "forward.db"
    backlog = Backlog(forward_db).open()
    tags = {"site": "k", "node": "kill-test", "channel": "current", "unit": "A", "interval": "60s"}
    backlog.enqueue(
        point(SUMMARY, tags, {"count": i}, BASE_MS + i * 60_000) for i in range(1, POINTS + 1)
    )  # ids 1..POINTS, point i at BASE_MS + i minutes
    backlog.close()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'site = "k"\ndata_dir = "{tmp_path}"\nlog_level = "WARNING"\n'
        "[mqtt]\nenabled = false\n[metrics]\nenabled = false\n"
        f'[forward]\nenabled = true\nurl = "{own_victoria.url}"\n'
        f"batch_max_points = {BATCH}\ndrain_max_points_per_s = 3000\nretry_first_s = 0.1\n"
    )
    in_flight: list[int] = []  # checkpoint at each kill: the next batch may be resent
    for kill_at in (POINTS // 5, POINTS // 2, POINTS * 3 // 4):
        proc = _start(config)
        try:
            async with asyncio.timeout(60):
                while _checkpoint(forward_db) < kill_at:
                    await asyncio.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
        in_flight.append(_checkpoint(forward_db))
    proc = _start(config)
    try:
        async with asyncio.timeout(60):
            while _waiting(forward_db):
                await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 10)

    counts = {
        ts: n
        for (name, labels, ts), n in samples_per_identity(own_victoria).items()
        if name == "fieldgate_summary_count" and ("node", "kill-test") in labels
    }
    expected = {BASE_MS + i * 60_000 for i in range(1, POINTS + 1)}
    assert set(counts) == expected, f"lost {len(expected - set(counts))} points"
    resendable = {
        BASE_MS + i * 60_000 for ckpt in in_flight for i in range(ckpt + 1, ckpt + BATCH + 1)
    }
    doubled = {ts for ts, n in counts.items() if n > 1}
    assert doubled <= resendable, (
        f"{len(doubled - resendable)} points doubled outside a batch in flight"
    )
    assert all(n <= 2 for n in counts.values())
    assert _checkpoint(forward_db) == POINTS
