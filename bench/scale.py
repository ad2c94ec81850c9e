"""Scale-out: what one site sends upstream, and what each site costs the central store.

Part A, one site, the whole stack: ``fieldgate run`` (mosquitto, journal, scoring, alerts,
forwarding on) with 200 MQTT nodes at 1 reading/s each (bench.site's publisher process),
forwarding per-interval summaries into a real VictoriaMetrics. Measured over whole
summary intervals after a warm-up: upstream bytes (VictoriaMetrics' HTTP listener,
``vm_tcplistener_read_bytes_total``: headers and gzip bodies as on the wire), points and
rows (``vm_rows_inserted_total``; one row per field), the gateway's CPU. ``--quick`` uses
10 s intervals (the same points per interval as production's 60 s, six times as often:
the figures are also given per interval and scaled to 60 s).

Part B, N sites against one VictoriaMetrics: running N whole gateways with 200 nodes each
does not fit on a 2-core machine, so each site is a *forwarder-only replay* process: the
gateway's own summariser (``gateway.forward.summarise``) over synthetic readings of 200
nodes at 1 Hz makes each interval's points, and the gateway's own sender
(``gateway.forward.sender``, gzip line protocol) posts them, one interval of data every
``60 / speedup`` seconds (time-compressed: each replay process is ``speedup`` real sites'
worth of writes). For N = 1, 2, 4, 8 processes: VictoriaMetrics' CPU (utime+stime from
/proc), RSS and ingested rows/s. Baseline in the same run: VictoriaMetrics idle (N = 0).
The per-site cost is the slope divided by ``speedup``.

Run: python -m bench.scale [--quick]
Last line: RESULT scale upstream_b_s=<per site, 60 s> rows_s=<per site> vm_cpu_core_per_1k_sites=<x> vm_rss_mb=<y>
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

from bench.site import SITE, proc_cpu_s, proc_rss_mb, start_fleet, stop_gateway
from gateway.forward.config import ForwardConfig
from gateway.forward.points import encode
from gateway.forward.sender import Sender, Verdict
from gateway.forward.summarise import JournalRow, Summariser
from tests.fixtures.servers import Mosquitto, VictoriaMetrics

NODES = 200
CHANNELS = (("vib_rms", "g"), ("current", "A"), ("pressure", "bar"), ("temperature", "degC"),
            ("flow", "l/min"))  # fmt: skip
MEANS = (0.21, 10.5, 1.02, 61.0, 125.0)


def vm_counters(vm: VictoriaMetrics) -> dict[str, float]:
    """Bytes read by its HTTP listener and rows inserted, from VictoriaMetrics' /metrics."""
    with urllib.request.urlopen(f"{vm.url}/metrics", timeout=10) as resp:
        body = resp.read().decode()

    def total(name: str) -> float:
        return sum(
            float(m[1]) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", body, re.M)
        )

    return {
        "bytes": total("vm_tcplistener_read_bytes_total"),
        "rows": total("vm_rows_inserted_total"),
    }


# -- part A: one whole site ---------------------------------------------------------------------


def one_site(
    workdir: Path, vm: VictoriaMetrics, interval_s: int, intervals: int
) -> dict[str, float]:
    broker = Mosquitto(workdir / "mosquitto")
    broker.start()
    config = workdir / "gateway.toml"
    config.write_text(
        f'site = "{SITE}"\ndata_dir = "{workdir / "var"}"\nlog_level = "WARNING"\n'
        f'[mqtt]\nurl = "{broker.url}"\nclient_id = "bench-scale-gateway"\n'
        "[metrics]\nenabled = false\n[scoring]\ncalibration_rows = 60\n"
        f'[forward]\nenabled = true\nurl = "{vm.url}"\ninterval_s = {interval_s}\n'
        "late_grace_s = 2\n"
    )
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        stderr=(workdir / "gateway.log").open("wb"),
    )
    warmup_s = max(interval_s, 10) + 5
    window_s = interval_s * intervals
    fleet = None
    try:
        time.sleep(3)
        fleet = start_fleet(
            broker.host, broker.port, nodes=NODES,
            seconds=warmup_s + 2 * interval_s + window_s + 10, seed=2, name="bench-scale-fleet",
        )  # fmt: skip
        time.sleep(warmup_s)
        # Align the window to whole intervals: start just after one closes.
        time.sleep(interval_s - (time.time() % interval_s) + 2 + 1)
        before, cpu0, t0 = vm_counters(vm), proc_cpu_s(gateway.pid), time.monotonic()
        time.sleep(window_s)
        after, cpu1, elapsed = vm_counters(vm), proc_cpu_s(gateway.pid), time.monotonic() - t0
        rss = proc_rss_mb(gateway.pid)
    finally:
        stop_gateway(gateway)
        if fleet is not None:
            fleet.join(timeout=30)
        broker.stop()
    per_interval = {k: (after[k] - before[k]) / intervals for k in after}
    return {
        "bytes_per_interval": per_interval["bytes"],
        "rows_per_interval": per_interval["rows"],
        "bytes_s": (after["bytes"] - before["bytes"]) / elapsed,
        "rows_s": (after["rows"] - before["rows"]) / elapsed,
        "gateway_cpu_core": (cpu1 - cpu0) / elapsed,
        "gateway_rss_mb": rss,
    }


# -- part B: N sites' forwarders against one store ----------------------------------------------


def site_intervals(site: str, count: int, seed: int, start_ms: int) -> list[list[bytes]]:
    """``count`` intervals of 200 nodes at 1 Hz as the gateway's summariser closes them."""
    rng = random.Random(seed)
    s = Summariser(site, 60_000, 0)
    out: list[list[bytes]] = []
    rid = 0
    for k in range(count):
        rows = []
        for n in range(NODES):
            for i in range(60):
                rid += 1
                values = tuple(m * (1 + rng.gauss(0, 0.02)) for m in MEANS)
                rows.append(
                    JournalRow(
                        rid, f"{site}-n{n:03d}", start_ms + k * 60_000 + i * 1000, CHANNELS, values
                    )
                )
        s.add_readings(rows)
        closed = s.close(start_ms + (k + 1) * 60_000)
        assert closed is not None
        out.append([line for p in closed[0] if (line := encode(p)) is not None])
    return out


def replay_site(
    url: str, site: str, speedup: float, seconds: float, *, ready: EventType, go: EventType
) -> None:
    """One site's forwarder, time-compressed: an interval's points every 60/speedup s."""
    start_ms = int(time.time() * 1000) - 3 * 86_400_000
    intervals = site_intervals(
        site, max(2, int(seconds * speedup / 60) + 2), zlib.crc32(site.encode()), start_ms
    )
    config = ForwardConfig(enabled=True, url=url)
    ready.set()
    go.wait()

    async def run() -> None:
        async with Sender(config) as sender:
            t0 = time.monotonic()
            for k, lines in enumerate(intervals):
                delay = t0 + k * 60 / speedup - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.monotonic() - t0 > seconds:
                    return
                for i in range(0, len(lines), config.batch_max_points):
                    body = b"\n".join(lines[i : i + config.batch_max_points]) + b"\n"
                    outcome = await sender.send(body)
                    if outcome.verdict is not Verdict.DELIVERED:
                        print(f"{site}: {outcome.reason}", file=sys.stderr)

    asyncio.run(run())


def n_sites(vm: VictoriaMetrics, n: int, speedup: float, seconds: float) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs, readies = [], []
    for i in range(n):
        ready = ctx.Event()
        p = ctx.Process(
            target=replay_site,
            args=(vm.url, f"s{n}-{i:02d}", speedup, seconds),
            kwargs={"ready": ready, "go": go},
            name=f"bench-scale-site-{i}",
        )
        p.start()
        procs.append(p)
        readies.append(ready)
    for ready in readies:
        ready.wait(300)
    assert vm.proc is not None
    before, cpu0, t0 = vm_counters(vm), proc_cpu_s(vm.proc.pid), time.monotonic()
    go.set()
    for p in procs:
        p.join(seconds + 60)
    elapsed = time.monotonic() - t0
    after, cpu1 = vm_counters(vm), proc_cpu_s(vm.proc.pid)
    return {
        "vm_cpu_core": (cpu1 - cpu0) / elapsed,
        "vm_rss_mb": proc_rss_mb(vm.proc.pid),
        "rows_s": (after["rows"] - before["rows"]) / elapsed,
        "bytes_s": (after["bytes"] - before["bytes"]) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="10 s intervals, N up to 4 (< 60 s each part)"
    )
    parser.add_argument("--speedup", type=float, default=60.0, help="time compression of part B")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        workdir = Path(tmp)
        vm = VictoriaMetrics(workdir / "vm")
        vm.start()
        try:
            interval = 10 if args.quick else 60
            a = one_site(workdir, vm, interval, 2)
            scale = 60 / interval
            up_60 = a["bytes_per_interval"] / 60
            rows_60 = a["rows_per_interval"] / 60
            print(f"A. one site, {NODES} nodes at 1 Hz, summaries every {interval} s: "
                  f"{a['bytes_per_interval'] / 1000:.1f} KB and {a['rows_per_interval']:.0f} rows "
                  f"per interval ({a['bytes_s'] / 1000:.2f} KB/s, {a['rows_s']:.0f} rows/s measured); "
                  f"at 60 s intervals: {up_60:.0f} B/s, {rows_60:.0f} rows/s "
                  f"({up_60 * 86400 / 1e6:.1f} MB/day); gateway {a['gateway_cpu_core']:.3f} core, "
                  f"{a['gateway_rss_mb']:.0f} MB (x{scale:g} interval scaling)", flush=True)  # fmt: skip
            seconds = 20 if args.quick else 40
            assert vm.proc is not None
            cpu0, t0 = proc_cpu_s(vm.proc.pid), time.monotonic()
            time.sleep(5)
            idle = (proc_cpu_s(vm.proc.pid) - cpu0) / (time.monotonic() - t0)
            print(f"B. VictoriaMetrics idle: {idle:.3f} core, {proc_rss_mb(vm.proc.pid):.0f} MB")
            rows = []
            for n in (1, 2, 4) if args.quick else (1, 2, 4, 8):
                r = n_sites(vm, n, args.speedup, seconds)
                sites = n * args.speedup
                rows.append((sites, r))
                print(f"B. {n} replay processes = {sites:.0f} sites' writes: VictoriaMetrics "
                      f"{r['vm_cpu_core']:.3f} core, {r['vm_rss_mb']:.0f} MB, "
                      f"{r['rows_s']:.0f} rows/s, {r['bytes_s'] / 1000:.0f} KB/s in", flush=True)  # fmt: skip
        finally:
            vm.stop()
    (s1, r1), (s2, r2) = rows[0], rows[-1]
    per_site_core = (r2["vm_cpu_core"] - r1["vm_cpu_core"]) / (s2 - s1)
    per_site_rows = (r2["rows_s"] - r1["rows_s"]) / (s2 - s1)
    core_per_1k = per_site_core * 1000
    print(f"per site at the centre: {per_site_rows:.0f} rows/s, {core_per_1k:.3f} core per 1,000 "
          f"sites (slope {s1:.0f} -> {s2:.0f} sites); 10,000 sites: {per_site_rows * 1e4:.0f} rows/s, "
          f"{core_per_1k * 10:.1f} cores of single-node VictoriaMetrics ingest")  # fmt: skip
    print(
        f"RESULT scale upstream_b_s={up_60:.0f} rows_s={rows_60:.0f} "
        f"vm_cpu_core_per_1k_sites={core_per_1k:.3f} vm_rss_mb={rows[-1][1]['vm_rss_mb']:.0f}"
    )


if __name__ == "__main__":
    main()
