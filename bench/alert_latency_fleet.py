"""The background fleet of bench.alert_latency: simulated nodes in a subprocess, loading the
gateway while the probe measures (its own process, so its CPU is not the gateway's)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.fixtures.servers import Mosquitto

PROBE = "probe-01"
RULE = "current_high"
THRESHOLD_A = 50.0
HIGH_A, LOW_A = 80.0, 2.0
TARGET_P99_MS = 20.0

SITE = "bench"
BACKGROUND_NODES = 12
BACKGROUND_TRANSPORTS = ("mqtt", "mqtt", "mqtt", "mqtt", "mqtt", "serial")  # 10 mqtt, 2 serial
BACKGROUND_BAUD = 921_600
BACKGROUND_BATCH = 25


# -- the background fleet (a subprocess) ---------------------------------------------------------


@contextlib.contextmanager
def background_fleet(
    broker: Mosquitto, pty_dir: Path, rate_per_s: float, nice: int
) -> Iterator[subprocess.Popen[str]]:
    cmd = [
        sys.executable, "-m", "bench.alert_latency", "--background",
        "--broker", broker.url, "--pty-dir", str(pty_dir), "--rate", str(rate_per_s),
        "--fleet-nice", str(nice),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"background fleet did not start: {line!r}")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def background_sim_config(broker_url: str, pty_dir: Path, rate_per_s: float) -> Any:
    from firmware_tools.sim.fleet import SimConfig

    return SimConfig(
        nodes=BACKGROUND_NODES,
        transports=BACKGROUND_TRANSPORTS,
        node_prefix="bg",
        rate_hz=rate_per_s / BACKGROUND_NODES,
        batch_size=BACKGROUND_BATCH,
        broker_url=broker_url,
        site=SITE,
        baud=BACKGROUND_BAUD,
        pty_dir=pty_dir,
        max_unacked=256,
        status_interval_ms=10_000,
    )


def serial_node_paths(pty_dir: Path) -> list[Path]:
    from firmware_tools.sim.fleet import SimConfig

    cfg = SimConfig(
        nodes=BACKGROUND_NODES, transports=BACKGROUND_TRANSPORTS, node_prefix="bg", site=SITE
    )
    return [
        pty_dir / f"tty{node_id}"
        for i, node_id in enumerate(cfg.node_ids())
        if cfg.transport_of(i) == "serial"
    ]


async def run_background(broker_url: str, pty_dir: Path, rate_per_s: float) -> None:
    from firmware_tools.sim.fleet import Simulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with Simulator(background_sim_config(broker_url, pty_dir, rate_per_s)) as sim:
        await sim.wait_ready()
        print("READY", json.dumps(sim.addresses()), flush=True)
        await stop.wait()
