"""The background fleet of bench.alert_latency: nodes in a subprocess, loading the gateway while
the probe measures (its own process, so its CPU is not the gateway's).

Two fleets:

* ``frames`` (the default): a cheap load generator. Each node's messages are pre-encoded
  byte templates (:mod:`bench.fleet_frames`) over a pre-computed pump signal; one thread, one
  timer, raw MQTT 3.1.1 sockets (QoS 1 PUBLISH, PUBACKs read and discarded) and pty masters,
  each written once per wake with everything due. No per-message Python objects beyond the
  bytes. The gateway's acks are read away and not acted on: nothing is resent (the gateway
  commits every message, so nothing needs to be).
* ``sim``: the full node simulator (:mod:`firmware_tools.sim`: firmware logic per sample,
  aiomqtt clients), as before issue 17; several times the CPU, kept for comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.fleet_frames import FramedNode, mqtt_connect
from gateway.protocol.mqtt_topics import parse_broker_url
from tests.fixtures.servers import Mosquitto

SITE = "bench"
BACKGROUND_NODES = 12
BACKGROUND_TRANSPORTS = ("mqtt", "mqtt", "mqtt", "mqtt", "mqtt", "serial")  # 10 mqtt, 2 serial
BACKGROUND_BAUD = 921_600
BACKGROUND_BATCH = 25
NODE_PREFIX = "bg"
RING_SAMPLES = 4096  # per node; played forwards then backwards (~20 s at 417 samples/s)
FLEETS = ("frames", "sim", "site")


@contextlib.contextmanager
def background_fleet(
    broker: Mosquitto, pty_dir: Path, rate_per_s: float, nice: int, fleet: str = "frames"
) -> Iterator[subprocess.Popen[str]]:
    cmd = [
        sys.executable, "-m", "bench.alert_latency", "--background",
        "--broker", broker.url, "--pty-dir", str(pty_dir), "--rate", str(rate_per_s),
        "--fleet-nice", str(nice), "--fleet", fleet,
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


def node_ids() -> list[str]:
    return [f"{NODE_PREFIX}-{i + 1:02d}" for i in range(BACKGROUND_NODES)]


def transport_of(index: int) -> str:
    return BACKGROUND_TRANSPORTS[index % len(BACKGROUND_TRANSPORTS)]


def serial_node_paths(pty_dir: Path) -> list[Path]:
    return [
        pty_dir / f"tty{node_id}"
        for i, node_id in enumerate(node_ids())
        if transport_of(i) == "serial"
    ]


# -- the cheap fleet: pre-encoded frames ---------------------------------------------------------


class _MqttOut:
    """A node's MQTT connection: CONNECT once, then QoS 1 PUBLISHes; PUBACKs discarded."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(mqtt_connect(client_id))
        connack = b""
        while len(connack) < 4:
            chunk = self.sock.recv(4 - len(connack))
            if not chunk:
                raise ConnectionError("the broker closed the connection before CONNACK")
            connack += chunk
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"the broker refused the connection: {connack!r}")
        self._packet_id = 0

    def next_packet_id(self) -> int:
        self._packet_id = self._packet_id % 0xFFFF + 1
        return self._packet_id

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self.sock.recv(65536, socket.MSG_DONTWAIT):
                pass

    def close(self) -> None:
        self.sock.close()


class _PtyOut:
    """A node's serial port: a pty whose slave the gateway opens through a stable symlink."""

    def __init__(self, link: Path) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(link.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(link)
        self.link = link
        self._pending = b""
        self.dropped_bytes = 0

    def write(self, data: bytes) -> None:
        data = self._pending + data
        try:
            written = os.write(self.master, data)
        except BlockingIOError:
            written = 0
        self._pending = data[written:]
        if len(self._pending) > 1 << 20:  # the gateway is not reading: a node's buffer is full
            self.dropped_bytes += len(self._pending)
            self._pending = b""

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.master, 65536):
                pass
        if self._pending:
            self.write(b"")

    def close(self) -> None:
        self.link.unlink(missing_ok=True)
        os.close(self.master)
        os.close(self.slave)


def _pump_values(rate_hz: float, seed: int) -> np.ndarray:
    from firmware_tools.sim.signals import PumpSignal

    return np.asarray([s.values for s in PumpSignal(rate_hz=rate_hz, seed=seed).take(RING_SAMPLES)])


def run_frames(broker_url: str, pty_dir: Path, rate_per_s: float) -> None:
    """The cheap fleet: until SIGTERM, every node sends a batch when its last sample is due."""
    from firmware_tools.sim.signals import PUMP_CHANNELS

    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    host, port = parse_broker_url(broker_url)
    rate_hz = rate_per_s / BACKGROUND_NODES
    rng = random.Random(17)
    nodes: list[FramedNode] = []
    outs: list[_MqttOut | _PtyOut] = []
    for i, node_id in enumerate(node_ids()):
        values = _pump_values(rate_hz, seed=i)
        boot_id = rng.randrange(1, 1 << 31)
        framed = FramedNode(
            node_id,
            boot_id,
            PUMP_CHANNELS,
            values,
            batch=BACKGROUND_BATCH,
            rate_hz=rate_hz,
            site=SITE,
        )
        nodes.append(framed)
        if transport_of(i) == "serial":
            outs.append(_PtyOut(pty_dir / f"tty{node_id}"))
        else:
            outs.append(_MqttOut(host, port, f"fieldgate-bench-{SITE}-{node_id}"))
    print("READY", json.dumps({n.node_id: type(o).__name__ for n, o in zip(nodes, outs, strict=True)}), flush=True)  # fmt: skip
    batch_ms = BACKGROUND_BATCH * 1000.0 / rate_hz
    sample_ms = 1000.0 / rate_hz
    t0 = time.monotonic()
    # Node uptimes start apart, and so do their batches.
    start_ms = [batch_ms * i / len(nodes) for i in range(len(nodes))]
    uptime0 = [60_000.0 + 7_919.0 * i for i in range(len(nodes))]
    try:
        while not stop:
            now_ms = (time.monotonic() - t0) * 1000.0
            for i, (node, out) in enumerate(zip(nodes, outs, strict=True)):
                parts = []
                while start_ms[i] + batch_ms - sample_ms <= now_ms:
                    payload = node.payload(uptime0[i] + start_ms[i])
                    start_ms[i] += batch_ms
                    if isinstance(out, _MqttOut):
                        parts.append(node.publish(out.next_packet_id(), payload))
                    else:
                        parts.append(node.serial_frame(payload))
                if parts:
                    out.write(b"".join(parts))
                out.drain()
            next_ms = min(start_ms) + batch_ms - sample_ms
            time.sleep(max(next_ms - (time.monotonic() - t0) * 1000.0, 1.0) / 1000.0)
    finally:
        for out in outs:
            out.close()


# -- the full simulator (for comparison) ---------------------------------------------------------


def background_sim_config(broker_url: str, pty_dir: Path, rate_per_s: float) -> Any:
    from firmware_tools.sim.fleet import SimConfig

    return SimConfig(
        nodes=BACKGROUND_NODES,
        transports=BACKGROUND_TRANSPORTS,
        node_prefix=NODE_PREFIX,
        rate_hz=rate_per_s / BACKGROUND_NODES,
        batch_size=BACKGROUND_BATCH,
        broker_url=broker_url,
        site=SITE,
        baud=BACKGROUND_BAUD,
        pty_dir=pty_dir,
        max_unacked=256,
        status_interval_ms=10_000,
    )


async def run_sim(broker_url: str, pty_dir: Path, rate_per_s: float) -> None:
    from firmware_tools.sim.fleet import Simulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with Simulator(background_sim_config(broker_url, pty_dir, rate_per_s)) as sim:
        await sim.wait_ready()
        print("READY", json.dumps(sim.addresses()), flush=True)
        await stop.wait()


def run_site(broker_url: str, rate_per_s: float) -> None:
    """bench.site's load: one node per reading/s offered, each sending one reading a second in
    its own message (a site's steady trickle), over one MQTT connection, until SIGTERM."""
    from bench.site import publisher

    host, port = parse_broker_url(broker_url)
    started = threading.Event()
    threading.Thread(
        target=publisher,
        args=(host, port),
        kwargs={"nodes": round(rate_per_s), "seconds": 3600, "seed": 7, "started": started},
        name="site-fleet",
        daemon=True,
    ).start()
    if not started.wait(120):
        raise SystemExit("the site fleet did not start")
    print("READY", json.dumps({}), flush=True)
    threading.Event().wait()  # SIGTERM ends the process


def run_background(fleet: str, broker_url: str, pty_dir: Path, rate_per_s: float) -> None:
    if fleet == "sim":
        asyncio.run(run_sim(broker_url, pty_dir, rate_per_s))
    elif fleet == "site":
        run_site(broker_url, rate_per_s)
    else:
        run_frames(broker_url, pty_dir, rate_per_s)
