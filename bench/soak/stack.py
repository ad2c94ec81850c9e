"""The soak's running system: servers, the gateway process and the simulated fleet."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from firmware_tools.sim.fleet import SimConfig, Simulator
from gateway.ble.radio import LocalRadio
from gateway.protocol.messages import Ack, DownlinkMessage, UplinkMessage
from tests.fixtures.servers import Mosquitto, VictoriaMetrics

_LOGGER = logging.getLogger(__name__)
SITE = "soak"
RAW_CHANNEL = "current"  # the channel forwarded raw: each reading's identity in the store
INTERVAL_S = 5.0
LATE_GRACE_S = 20.0
BATCH_MAX_POINTS = 500
RAW_BUDGET_BYTES = 24 * 1024


@dataclass(frozen=True)
class FleetShape:
    serial: int = 4
    mqtt: int = 4
    ble: int = 2
    rate_hz: float = 2.0
    batch: int = 5
    seed: int = 1


def gateway_toml(
    data_dir: Path,
    broker: Mosquitto,
    vm: VictoriaMetrics,
    serial: list[str],
    ble: tuple[str, list[str]],
) -> str:
    ports = ", ".join(f'{{ path = "{p}" }}' for p in serial)
    ble_nodes = ", ".join(f'"{n}"' for n in ble[1])
    return f"""site = "{SITE}"
data_dir = "{data_dir}"
log_level = "WARNING"
shutdown_grace_s = 3
[mqtt]
url = "{broker.url}"
client_id = "soak-gateway"
reconnect_max_s = 2
[serial]
ports = [{ports}]
reopen_interval_s = 0.5
[ble]
enabled = {"true" if ble[1] else "false"}
transport = "{ble[0]}"
nodes = [{ble_nodes}]
reconnect_max_s = 2
[metrics]
enabled = false
[forward]
enabled = true
url = "{vm.url}"
interval_s = {INTERVAL_S}
late_grace_s = {LATE_GRACE_S}
batch_max_points = {BATCH_MAX_POINTS}
batch_max_age_s = 1
retry_first_s = 0.2
retry_max_s = 2
timeout_s = 5
raw_channels = ["{RAW_CHANNEL}"]
[forward.budgets]
raw_bytes = {RAW_BUDGET_BYTES}
"""


class AckTap:
    """What the gateway acknowledged, as the nodes saw it: the highest ``up_to_seq`` per
    (node, boot). Wraps each node's public ``handle``; the node logic runs unchanged."""

    def __init__(self) -> None:
        self.acked: dict[tuple[str, int], int] = {}

    def attach(self, sim: Simulator) -> None:
        for node in sim.nodes.values():
            logic = node.logic
            original = logic.handle

            def handle(msg: DownlinkMessage, now_ms: int, _orig=original) -> list[UplinkMessage]:  # type: ignore[no-untyped-def]
                if isinstance(msg, Ack):
                    key = (msg.node_id, msg.boot_id)
                    self.acked[key] = max(self.acked.get(key, 0), msg.up_to_seq)
                return _orig(msg, now_ms)

            logic.handle = handle  # type: ignore[method-assign]


@dataclass
class GatewayProcess:
    """``fieldgate run`` supervised like systemd's Restart=always (1 s later)."""

    config: Path
    log: Path
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    starts: int = 0
    kills: int = 0
    unexpected_exits: list[int] = field(default_factory=list)
    lives: list[tuple[float, float, int]] = field(default_factory=list)  # (start, end, pid)
    _killing: bool = False
    _stop: bool = False
    running: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    async def supervise(self) -> None:
        while not self._stop:
            with self.log.open("ab") as log:
                self.proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config),
                    stdout=subprocess.DEVNULL, stderr=log,
                )  # fmt: skip
            self.started_at = time.monotonic()
            self.starts += 1
            self.exited.clear()
            self.running.set()
            rc = await self.proc.wait()
            self.running.clear()
            self.exited.set()
            self.lives.append((self.started_at, time.monotonic(), self.proc.pid))
            if not self._killing and not self._stop:
                self.unexpected_exits.append(rc)
                _LOGGER.warning("gateway exited by itself (rc %s); restarting", rc)
            self._killing = False
            if not self._stop:
                await asyncio.sleep(1.0)

    def kill9(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        self._killing = True
        os.kill(pid, signal.SIGKILL)
        self.kills += 1
        return True

    async def stop(self) -> None:
        self._stop = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@dataclass
class Stack:
    workdir: Path
    data_dir: Path
    shape: FleetShape
    broker: Mosquitto = field(init=False)
    vm: VictoriaMetrics = field(init=False)
    sims: list[Simulator] = field(default_factory=list)
    taps: AckTap = field(default_factory=AckTap)
    gateway: GatewayProcess = field(init=False)
    serial_nodes: list[str] = field(default_factory=list)
    ble_nodes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.broker = Mosquitto(self.workdir / "mosquitto")
        self.vm = VictoriaMetrics(self.workdir / "vm")
        cfg = self.workdir / "gateway.toml"
        self.gateway = GatewayProcess(cfg, self.workdir / "gateway.log")

    @property
    def journal(self) -> Path:
        return self.data_dir / "journal.db"

    @property
    def backlog(self) -> Path:
        return self.data_dir / "forward.db"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Stack]:
        s = self.shape
        await asyncio.to_thread(self.broker.start)
        await asyncio.to_thread(self.vm.start)
        try:
            async with LocalRadio(1 + s.ble) as radio, contextlib.AsyncExitStack() as stack:
                tcp_specs = await radio.serve_tcp()
                wired = SimConfig(
                    nodes=s.serial + s.mqtt,
                    transports=("serial",) * s.serial + ("mqtt",) * s.mqtt,
                    rate_hz=s.rate_hz, batch_size=s.batch, seed=s.seed, site=SITE,
                    broker_url=self.broker.url, pty_dir=self.workdir / "tty",
                    max_unacked=100_000, status_interval_ms=10_000, model=None,
                )  # fmt: skip
                configs = [wired] + [
                    SimConfig(
                        nodes=1,
                        node_prefix=f"vib{i + 1}",
                        transports=("ble",),
                        rate_hz=s.rate_hz,
                        batch_size=s.batch,
                        seed=s.seed * 100 + i,
                        site=SITE,
                        ble_transport=radio.specs[1 + i],
                        max_unacked=100_000,
                        model=None,
                    )
                    for i in range(s.ble)
                ]
                for config in configs:
                    sim = await stack.enter_async_context(Simulator(config))
                    self.taps.attach(sim)
                    self.sims.append(sim)
                for sim in self.sims:
                    await sim.wait_ready(30)
                addresses = {k: v for sim in self.sims for k, v in sim.addresses().items()}
                self.serial_nodes = [n for n, (kind, _) in addresses.items() if kind == "serial"]
                self.ble_nodes = [n for n, (kind, _) in addresses.items() if kind == "ble"]
                self.gateway.config.write_text(
                    gateway_toml(
                        self.data_dir,
                        self.broker,
                        self.vm,
                        [addresses[n][1] for n in self.serial_nodes],
                        (tcp_specs[0], self.ble_nodes),
                    )
                )
                async with asyncio.TaskGroup() as tg:
                    sup = tg.create_task(self.gateway.supervise(), name="soak:gateway")
                    try:
                        yield self
                    finally:
                        await self.gateway.stop()
                        await sup
                        for sim in self.sims:
                            sim.stop()
        finally:
            await asyncio.to_thread(self.broker.stop)
            await asyncio.to_thread(self.vm.stop)

    def node(self, node_id: str):  # type: ignore[no-untyped-def]
        for sim in self.sims:
            if node_id in sim.nodes:
                return sim.nodes[node_id]
        raise KeyError(node_id)

    def unacked_messages(self) -> int:
        return sum(len(n.logic.unacked) for sim in self.sims for n in sim.nodes.values())

    def stop_sampling(self) -> None:
        for sim in self.sims:
            sim.stop()
