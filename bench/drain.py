"""Drain rate of the forwarder's backlog against influxdb-client's own batched writes.

Method (same VictoriaMetrics, same run, so the ratio survives a noisy shared machine):
1. N distinct summary points wait in a forward.db backlog; the forwarder (drain only, no
   rate limit, 5000-point batches, gzip) sends them all; the clock runs until the last
   checkpoint is stored (so it includes reading SQLite and advancing the durable checkpoint).
2. Baseline: influxdb-client's batching WriteApi (batch_size 5000, gzip) writes the same
   N lines (already encoded: the fairest case for the client) to the same server, under
   another bucket and site so nothing collides; the clock runs until ``close()`` flushed.
   Two rounds, client first then forwarder first; the ratio is of the two means.
3. Upstream volume: one node at 1 reading/s on three channels for an hour, summarised at the
   default interval (60 s) versus forwarded raw, each gzipped as sent, scaled to a day.

Run: python -m bench.drain [--quick]
Last line: RESULT drain ratio_vs_client=<x> points_per_s=<n> upstream_kb_per_node_day=<y>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import os
import tempfile
import time
from pathlib import Path

from gateway.forward.backlog import Backlog
from gateway.forward.config import ForwardBudgets, ForwardConfig
from gateway.forward.forwarder import Forwarder
from gateway.forward.points import RAW, SUMMARY, Point, encode, point
from gateway.forward.summarise import JournalRow, Summariser
from tests.fixtures.servers import VictoriaMetrics

T0 = 1_600_000_000_000
BATCH = 5000


def _points(n: int, site: str) -> list[Point]:
    nodes = 100
    return [
        point(SUMMARY, {"site": site, "node": f"node-{i % nodes:03d}", "channel": "current",
                        "unit": "A", "interval": "60s"},
              {"count": 60, "min": 1.25, "max": 9.5, "mean": 4.75 + i % 7, "std": 1.5,
               "last": 3.0, "p95": 8.75},
              T0 + (i // nodes) * 60_000)
        for i in range(n)
    ]  # fmt: skip


def fill(path: Path, n: int, site: str = "ours") -> None:
    """``n`` distinct points: 20k through the real enqueue, the rest copied in SQL with
    later timestamps (setting up is not what is measured, and encoding 1M points is slow)."""
    import sqlite3

    chunk = min(n, 20_000)
    huge = ForwardBudgets(total_bytes=1 << 40, raw_bytes=1 << 40)
    backlog = Backlog(path, huge).open()
    backlog.enqueue(_points(chunk, site))
    backlog.close()
    span = (chunk // 100 + 1) * 60_000  # the chunk's time span: copies never collide
    with sqlite3.connect(path) as db:
        for k in range(1, -(-n // chunk)):
            db.execute(
                "INSERT INTO points (cls, ts_ms, enq_ms, level, line, doc)"
                " SELECT cls, ts_ms + ?1, enq_ms, level,"
                " CAST(substr(line, 1, length(line) - 13) || (ts_ms + ?1) AS BLOB), doc"
                " FROM points WHERE id <= ?2",
                (k * span, min(chunk, n - k * chunk)),
            )


async def drain_ours(vm: VictoriaMetrics, path: Path, n: int) -> float:
    cfg = ForwardConfig(
        enabled=True, url=vm.url, batch_max_points=BATCH, batch_max_bytes=8_000_000,
        batch_max_age_s=0.0, drain_max_points_per_s=0.0, budgets=ForwardBudgets(total_bytes=1 << 40),
    )  # fmt: skip
    fwd = Forwarder(cfg, site="ours", journal_path=path.with_name("none.db"), backlog_path=path)
    started = time.perf_counter()
    task = asyncio.create_task(fwd.run(summarise=False), name="bench:drain")
    try:
        await fwd.ready.wait()
        await fwd.idle.wait()
        elapsed = time.perf_counter() - started
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert fwd.delivered_points == n, (fwd.delivered_points, n, fwd.last_error)
    return elapsed


def drain_client(vm: VictoriaMetrics, records: list[str]) -> float:
    from influxdb_client import InfluxDBClient, WriteOptions

    started = time.perf_counter()
    with InfluxDBClient(url=vm.url, token="x", org="fieldgate", enable_gzip=True) as client:
        api = client.write_api(write_options=WriteOptions(batch_size=BATCH, flush_interval=1_000))
        api.write(bucket="client", record=records, write_precision="ms")
        api.close()  # flushes every batch
    return time.perf_counter() - started


def client_records(path: Path, ours: str, theirs: str) -> list[str]:
    """The backlog's very lines, under another site so nothing collides with ours."""
    import sqlite3

    with sqlite3.connect(path) as db:
        return [
            bytes(line).decode().replace(f"site={ours}", f"site={theirs}", 1)
            for (line,) in db.execute("SELECT line FROM points ORDER BY id")
        ]


def upstream_per_day() -> tuple[float, float]:
    """(summaries, raw) gzipped bytes per node per day at 1 reading/s, 3 channels."""
    channels = (("current", "A"), ("pressure", "bar"), ("temp", "degC"))
    rows = [JournalRow(i + 1, "node-001", T0 + i * 1000, channels,
                       (4.0 + (i % 13) / 10, 2.0 + (i % 7) / 100, 21.0 + (i % 29) / 10))
            for i in range(3600)]  # fmt: skip
    s = Summariser("site1", 60_000, 0)
    s.add_readings(rows)
    closed = s.close(T0 + 3_600_000)
    assert closed is not None
    summary = b"\n".join(line for p in closed[0] if (line := encode(p)) is not None)
    raw = b"\n".join(
        line
        for r in rows
        for (name, _), v in zip(r.channels, r.values, strict=True)
        if (line := encode(point(RAW, {"site": "site1", "node": r.node_id, "channel": name}, {"value": v}, r.ts_ms)))
    )  # fmt: skip
    return len(gzip.compress(summary, 1)) * 24.0, len(gzip.compress(raw, 1)) * 24.0


async def main_async(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        vm = VictoriaMetrics(workdir=Path(tmp) / "vm", extra_args=("-memory.allowedPercent=40",))
        vm.start()
        try:
            print(f"cpus: {os.cpu_count()}, load: {os.getloadavg()[0]:.2f}; {n} points")
            client_rates, our_rates = [], []
            # Two rounds, the order swapped in the second, so neither side gets all of
            # VictoriaMetrics' warm-up or a quiet moment of the shared machine.
            for r in range(2):
                path = Path(tmp) / f"forward{r}.db"
                t = time.perf_counter()
                fill(path, n, site=f"ours{r}")
                print(f"round {r + 1}: backlog filled in {time.perf_counter() - t:.1f} s")
                records = client_records(path, f"ours{r}", f"client{r}")
                if r == 0:
                    client_rates.append(n / drain_client(vm, records))
                our_rates.append(n / await drain_ours(vm, path, n))
                if r == 1:
                    client_rates.append(n / drain_client(vm, records))
                print(f"round {r + 1}: influxdb-client {client_rates[-1]:,.0f} points/s, "
                      f"forwarder {our_rates[-1]:,.0f} points/s (checkpointed)")  # fmt: skip
        finally:
            vm.stop()
    ours, client = sum(our_rates) / 2, sum(client_rates) / 2
    summary_b, raw_b = upstream_per_day()
    print(
        f"mean of two rounds: influxdb-client {client:,.0f} points/s, forwarder {ours:,.0f} points/s"
    )
    print(f"upstream per node per day (1 reading/s, 3 channels, gzip): summaries "
          f"{summary_b / 1024:.0f} KiB, raw {raw_b / 1024:.0f} KiB ({raw_b / summary_b:.0f}x)")  # fmt: skip
    print(
        f"RESULT drain ratio_vs_client={ours / client:.3f} points_per_s={ours:.0f} "
        f"upstream_kb_per_node_day={summary_b / 1024:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200k points instead of 1M")
    parser.add_argument("--points", type=int, default=None)
    args = parser.parse_args()
    n = args.points or (200_000 if args.quick else 1_000_000)
    asyncio.run(main_async(n))


if __name__ == "__main__":
    main()
