"""A site's steady load: many MQTT nodes at 1 reading/s each, scoring and alerts on.

Method:

* mosquitto (Debian's, private, loopback) and the gateway as a separate process
  (``fieldgate run``, the service as deployed), its journal in a temp dir, scoring on with
  a short calibration (``calibration_rows``) and the default alert rules.
* The load: one publisher **process** plays N nodes (default 500) over one MQTT connection.
  Every message is CBOR-encoded before the clock starts, so the generator's own CPU is the
  cost of publishing, reported beside the gateway's. First each node sends one batch of
  calibration rows (its baseline), then one single-reading message per node per second
  (QoS 1), spread evenly across the second, with plausible pump values plus noise.
* Baseline: the same gateway, connected and idle, measured for a few seconds before the
  load starts (its floor: timers, keepalives). Then the steady load is measured after a
  warm-up: the gateway's CPU share (utime+stime from /proc over the window, in cores), its
  RSS at the end, readings committed per second (from its journal), and the generator's CPU.

Run: python -m bench.site [--quick] [--nodes N] [--full]
Last line: RESULT site nodes=<n> cpu_core=<x> rss_mb=<y> (--full adds upstream_kb_s=<z>)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import paho.mqtt.client as paho

from gateway.protocol.messages import Channel, ReadingBatch, Sample, TimeBase
from gateway.protocol.mqtt_topics import format_topic
from gateway.protocol.payload import encode_message
from tests.fixtures.servers import Mosquitto

SITE = "bench"
CHANNELS = (
    Channel("vib_rms", "g"),
    Channel("current", "A"),
    Channel("pressure", "bar"),
    Channel("temperature", "degC"),
    Channel("flow", "l/min"),
)
MEANS = (0.21, 10.5, 1.02, 61.0, 125.0)
NOISE = (0.005, 0.15, 0.01, 0.2, 1.5)
CALIBRATION_ROWS = 60
TARGET_CPU_CORE = 0.15
TARGET_RSS_MB = 150.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def row(rng: random.Random) -> tuple[float, ...]:
    return tuple(round(m + rng.gauss(0, s), 4) for m, s in zip(MEANS, NOISE, strict=True))


def node_id(i: int) -> str:
    return f"pump-{i:04d}"


def encode_calibration(nodes: int, rng: random.Random) -> list[tuple[str, bytes]]:
    out = []
    for i in range(nodes):
        samples = tuple(Sample(1000 * k, row(rng)) for k in range(CALIBRATION_ROWS))
        msg = ReadingBatch(node_id(i), 1, 1, TimeBase.UPTIME_MS, CHANNELS, samples)
        out.append((format_topic(SITE, node_id(i), "readings"), encode_message(msg)))
    return out


def encode_steady(nodes: int, seconds: int, rng: random.Random) -> list[list[tuple[str, bytes]]]:
    """Per second, one single-reading message per node (seqs after the calibration batch)."""
    per_second = []
    for s in range(seconds):
        seq = CALIBRATION_ROWS + 1 + s
        t = 1000 * (CALIBRATION_ROWS + s)
        per_second.append(
            [
                (
                    format_topic(SITE, node_id(i), "readings"),
                    encode_message(
                        ReadingBatch(
                            node_id(i), 1, seq, TimeBase.UPTIME_MS, CHANNELS, (Sample(t, row(rng)),)
                        )
                    ),
                )
                for i in range(nodes)
            ]
        )
    return per_second


def publisher(
    host: str, port: int, *, nodes: int, seconds: int, seed: int, started: EventType
) -> None:
    """The fleet: one process, one connection, pre-encoded messages paced over each second."""
    rng = random.Random(seed)
    calibration = encode_calibration(nodes, rng)
    steady = encode_steady(nodes, seconds, rng)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-site-fleet")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    for topic, payload in calibration:
        client.publish(topic, payload, qos=1)
    started.set()
    tick = time.monotonic()
    for messages in steady:
        gap = 1.0 / len(messages)
        for k, (topic, payload) in enumerate(messages):
            client.publish(topic, payload, qos=1)
            delay = tick + (k + 1) * gap - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        tick += 1.0
    client.disconnect()
    client.loop_stop()


def start_fleet(
    host: str, port: int, *, nodes: int, seconds: float, seed: int, name: str = "bench-site-fleet"
) -> BaseProcess:
    """Run :func:`publisher` in a process of its own (its CPU is then its own to measure);
    return once it publishes."""
    spawn = multiprocessing.get_context("spawn")
    started = spawn.Event()
    fleet = spawn.Process(
        target=publisher,
        args=(host, port),
        kwargs={"nodes": nodes, "seconds": seconds, "seed": seed, "started": started},
        name=name,
    )
    fleet.start()
    if not started.wait(120):
        raise SystemExit("the load generator did not start (see its traceback above)")
    return fleet


def stop_gateway(gateway: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a service manager stops it; killed if it has not exited after 30 s."""
    gateway.send_signal(signal.SIGTERM)
    try:
        gateway.wait(timeout=30)
    except subprocess.TimeoutExpired:
        gateway.kill()


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def committed_readings(journal: Path) -> int:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT count(*) FROM readings").fetchone()[0])
    finally:
        db.close()


def cpu_share(pid: int, seconds: float) -> float:
    before, t0 = proc_cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    return (proc_cpu_s(pid) - before) / (time.monotonic() - t0)


def write_config(workdir: Path, broker: Mosquitto, extra: str = "") -> Path:
    config = workdir / "gateway.toml"
    config.write_text(
        f'site = "{SITE}"\ndata_dir = "{workdir / "var"}"\nlog_level = "WARNING"\n'
        f'[mqtt]\nurl = "{broker.url}"\nclient_id = "bench-site-gateway"\n'
        "[metrics]\nenabled = false\n"
        f"[scoring]\ncalibration_rows = {CALIBRATION_ROWS}\n" + extra
    )
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 s of load instead of 60 s")
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--full", action="store_true", help="dashboard polled, forwarding on (bench/site_full.py)"
    )
    args = parser.parse_args()
    window_s = 20 if args.quick else 60
    warmup_s = 8
    with tempfile.TemporaryDirectory(prefix="bench-site-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "mosquitto")
        broker.start()
        full = None
        if args.full:  # bench/site_full.py: VictoriaMetrics, the dashboard and its poller
            from bench.site_full import FullSite

            full = FullSite(workdir, workdir / "var")
            full.start()
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "run",
                "--config",
                str(write_config(workdir, broker, full.config() if full else "")),
            ],
            stderr=(workdir / "gateway.log").open("wb"),
        )
        try:
            journal = workdir / "var" / "journal.db"
            deadline = time.monotonic() + 60
            while not journal.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2)  # connected and subscribed
            idle = cpu_share(gateway.pid, 4)
            print(f"gateway idle (connected, no nodes): {idle:.3f} core", flush=True)

            fleet = start_fleet(
                broker.host, broker.port, nodes=args.nodes, seconds=warmup_s + window_s + 2,
                seed=args.seed,
            )  # fmt: skip
            assert fleet.pid is not None
            time.sleep(warmup_s)  # calibration batches committed and scored, baselines made
            if full is not None:
                full.begin()
            fleet_before = proc_cpu_s(fleet.pid)
            readings_before = committed_readings(journal)
            t0 = time.monotonic()
            busy = cpu_share(gateway.pid, window_s)
            elapsed = time.monotonic() - t0
            fleet_share = (proc_cpu_s(fleet.pid) - fleet_before) / elapsed
            rate = (committed_readings(journal) - readings_before) / elapsed
            rss = proc_rss_mb(gateway.pid)
            upstream = full.upstream_kb_s() if full is not None else None
            fleet.join(timeout=30)
        finally:
            stop_gateway(gateway)
            broker.stop()
            if full is not None:
                print(f"full site: forwarded {full.points_stored()} samples into VictoriaMetrics; "
                      f"dashboard polled {len(full.poll_ms)} times, p95 {full.p95_ms():.0f} ms, "
                      f"{full.poll_errors} errors")  # fmt: skip
                full.stop()
    print(f"nodes {args.nodes}, window {window_s} s after {warmup_s} s warm-up")
    print(f"readings committed: {rate:.0f}/s (offered {args.nodes}/s)")
    print(f"gateway CPU: {busy:.3f} core under load ({idle:.3f} idle), "
          f"{1e6 * busy / max(rate, 1):.0f} us per reading")  # fmt: skip
    print(f"gateway RSS: {rss:.0f} MB (target <= {TARGET_RSS_MB:.0f})")
    print(f"load generator CPU: {fleet_share:.3f} core")
    print(
        f"target cpu_core <= {TARGET_CPU_CORE}: {'met' if busy <= TARGET_CPU_CORE else 'NOT met'}"
    )
    extra = f" upstream_kb_s={upstream:.2f}" if upstream is not None else ""
    print(f"RESULT site nodes={args.nodes} cpu_core={busy:.3f} rss_mb={rss:.0f}{extra}")


if __name__ == "__main__":
    main()
