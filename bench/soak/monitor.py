"""Once a second: the gateway's RSS and open fds, the journal's size and the backlog's."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.soak.stack import Stack


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds since the soak started
    pid: int | None
    rss_mb: float | None
    fds: int | None
    readings: int  # journal rows so far (highest id)
    backlog_points: int  # waiting in forward.db
    delivered_through: int  # the store's checkpoint (backlog id)


@dataclass
class Monitor:
    stack: Stack
    t0: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)

    async def run(self, period_s: float = 1.0) -> None:
        while True:
            self.samples.append(await asyncio.to_thread(self.sample))
            await asyncio.sleep(period_s)

    def sample(self) -> Sample:
        pid = self.stack.gateway.pid
        rss, fds = (proc_rss_mb(pid), proc_fds(pid)) if pid is not None else (None, None)
        readings = _scalar(self.stack.journal, "SELECT coalesce(max(id), 0) FROM readings")
        waiting = _scalar(self.stack.backlog, "SELECT count(*) FROM points")
        through = _scalar(
            self.stack.backlog, "SELECT coalesce(max(through_id), 0) FROM checkpoints"
        )
        return Sample(time.monotonic() - self.t0, pid, rss, fds, readings, waiting, through)

    def rss_growth(
        self, lives: list[tuple[float, float, int]], warmup_s: float = 15.0
    ) -> dict[str, float]:
        """Growth of RSS and fds within the longest-lived gateway process (after warm-up)."""
        best: tuple[float, list[Sample]] | None = None
        for start, end, pid in lives:
            mine = [
                s
                for s in self.samples
                if s.pid == pid and s.rss_mb is not None and s.t >= start - self.t0 + warmup_s
            ]
            if len(mine) >= 2 and (best is None or end - start > best[0]):
                best = (end - start, mine)
        if best is None:
            return {"rss_growth_mb": 0.0, "fd_growth": 0.0, "life_s": 0.0, "rss_end_mb": 0.0}
        life, mine = best
        head = mine[: max(1, len(mine) // 10)]
        tail = mine[-max(1, len(mine) // 10) :]
        return {
            "rss_growth_mb": _mean([s.rss_mb for s in tail]) - _mean([s.rss_mb for s in head]),
            "fd_growth": _mean([s.fds for s in tail]) - _mean([s.fds for s in head]),
            "life_s": life,
            "rss_end_mb": mine[-1].rss_mb or 0.0,
        }


def _mean(values: list[float | None] | list[int | None]) -> float:
    got = [float(v) for v in values if v is not None]
    return sum(got) / len(got) if got else 0.0


def _scalar(db_path: Path, sql: str) -> int:
    if not db_path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return 0
    try:
        return int(db.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def proc_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
