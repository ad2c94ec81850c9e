"""A fleet of simulated nodes on a mix of transports, as one async context manager.

::

    cfg = SimConfig(nodes=4, transports=("serial", "mqtt"), broker_url="mqtt://127.0.0.1:1883")
    async with Simulator(cfg) as sim:
        print(sim.addresses())           # tty paths, MQTT topic prefixes
        await sim.run_for(30)
        print(sim.stats())

Every node runs in a named task of one :class:`asyncio.TaskGroup`; leaving the
``async with`` stops sampling, closes ptys and MQTT connections, and waits for
all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from firmware_tools.sim.links import Link
from firmware_tools.sim.mqtt_link import MqttLink
from firmware_tools.sim.node import Inferencer, NodeConfig, NodeLogic
from firmware_tools.sim.replay import ReplaySignal
from firmware_tools.sim.runner import SimNode
from firmware_tools.sim.serial_link import PtySerialLink
from firmware_tools.sim.signals import Fault, PumpSignal, SignalSource

_LOGGER = logging.getLogger(__name__)

TRANSPORTS = ("serial", "mqtt", "ble")


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything a simulation run needs; validated on construction.

    ``transports`` is assigned round-robin (``("serial", "mqtt")`` over 4 nodes
    gives serial, mqtt, serial, mqtt). ``faults`` pairs a node id (None: every
    node) with a fault. With ``replay`` set, every node replays that SKAB folder
    or file at ``replay_speedup`` instead of the synthetic pump (``rate_hz`` is
    then the recording's own rate times the speedup).
    """

    nodes: int = 3
    transports: tuple[str, ...] = ("serial",)
    node_prefix: str = "pump"
    rate_hz: float = 1.0
    batch_size: int = 10
    faults: tuple[tuple[str | None, Fault], ...] = ()
    seed: int = 0
    broker_url: str = "mqtt://127.0.0.1:1883"
    site: str = "demo"
    json_payloads: bool = False
    baud: int = 115_200
    pty_dir: Path | None = None
    ble_transport: str | None = None  # HCI spec for BLE nodes, e.g. "tcp-client:127.0.0.1:9000"
    ble_beacon: bool = False  # BLE nodes advertise readings instead of serving GATT
    replay: Path | None = None
    replay_speedup: float = 1.0
    model: Path | None = None
    resend_timeout_ms: int = 3_000
    status_interval_ms: int = 10_000
    max_unacked: int = 64
    clock_drift_ppm: tuple[float, ...] = field(default=())  # per node, cycled

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("nodes must be >= 1")
        if not self.transports:
            raise ValueError("give at least one transport")
        for t in self.transports:
            if t not in TRANSPORTS:
                raise ValueError(f"transport {t!r}: choose from {', '.join(TRANSPORTS)}")
        if self.rate_hz <= 0:
            raise ValueError("rate_hz must be > 0")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if "ble" in self.transports and self.ble_transport is None:
            raise ValueError("BLE nodes need ble_transport (an HCI spec such as tcp-client:...)")
        ids = set(self.node_ids())
        for node, _fault in self.faults:
            if node is not None and node not in ids:
                raise ValueError(f"fault for unknown node {node!r}; nodes are {sorted(ids)}")

    def node_ids(self) -> list[str]:
        return [f"{self.node_prefix}-{i + 1:02d}" for i in range(self.nodes)]

    def transport_of(self, index: int) -> str:
        return self.transports[index % len(self.transports)]


class Simulator:
    """Runs the fleet described by a :class:`SimConfig`. Use as ``async with``."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.nodes: dict[str, SimNode] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._t0 = 0.0
        self._stopped = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        try:
            for index, node_id in enumerate(self.config.node_ids()):
                self.nodes[node_id] = self._build_node(index, node_id)
        except BaseException:
            self._close_links()
            raise
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        for node in self.nodes.values():
            self._tg.create_task(node.run(), name=f"sim:{node.node_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        assert self._tg is not None
        try:
            await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            self._close_links()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def stop(self) -> None:
        """Stop every node gracefully (sampling ends, links close)."""
        self._stopped.set()
        for node in self.nodes.values():
            node.stop()

    async def run_for(self, seconds: float | None) -> None:
        """Run for ``seconds`` (forever if None) or until :meth:`stop`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopped.wait()

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Until every link is up (ptys exist, MQTT connected, BLE advertising)."""
        async with asyncio.timeout(timeout_s):
            for node in self.nodes.values():
                await node.link.ready.wait()

    # -- what tests and the demo look at ---------------------------------------------------

    def now_ms(self) -> int:
        return round((asyncio.get_running_loop().time() - self._t0) * 1000)

    def stats(self) -> dict[str, dict[str, int]]:
        return {node_id: node.stats() for node_id, node in self.nodes.items()}

    def addresses(self) -> dict[str, tuple[str, str]]:
        """``node_id -> (transport, address)``: tty path, MQTT topic filter or BLE address."""
        return {nid: (n.link.kind, n.link.address) for nid, n in self.nodes.items()}

    def serial_link(self, node_id: str) -> PtySerialLink:
        link = self.nodes[node_id].link
        if not isinstance(link, PtySerialLink):
            raise TypeError(f"{node_id} is on {link.kind}, not serial")
        return link

    # -- internals -------------------------------------------------------------------------

    def _build_node(self, index: int, node_id: str) -> SimNode:
        cfg = self.config
        source = self._source(index, node_id)
        drift = cfg.clock_drift_ppm[index % len(cfg.clock_drift_ppm)] if cfg.clock_drift_ppm else 0
        node_cfg = NodeConfig(
            node_id=node_id,
            channels=source.channels,
            batch_size=cfg.batch_size,
            resend_timeout_ms=cfg.resend_timeout_ms,
            status_interval_ms=cfg.status_interval_ms,
            max_unacked=cfg.max_unacked,
            clock_drift_ppm=drift,
            seed=cfg.seed * 1000 + index,
        )
        logic = NodeLogic(node_cfg, model=self._model(len(source.channels)), now_ms=self.now_ms())
        return SimNode(logic, source, self._link(index, node_id), clock_ms=self.now_ms)

    def _source(self, index: int, node_id: str) -> SignalSource:
        cfg = self.config
        if cfg.replay is not None:
            return ReplaySignal(cfg.replay, speedup=cfg.replay_speedup, loop=True)
        faults = [f for who, f in cfg.faults if who is None or who == node_id]
        return PumpSignal(rate_hz=cfg.rate_hz, seed=cfg.seed * 1000 + index, faults=faults)

    def _model(self, n_channels: int) -> Inferencer | None:
        if self.config.model is None:
            return None
        from firmware_tools.sim.tflm import TflmModel

        return TflmModel.from_file(self.config.model, n_channels=n_channels)

    def _link(self, index: int, node_id: str) -> Link:
        cfg = self.config
        kind = cfg.transport_of(index)
        if kind == "serial":
            return PtySerialLink(node_id, baud=cfg.baud, pty_dir=cfg.pty_dir)
        if kind == "mqtt":
            return MqttLink(
                node_id, broker_url=cfg.broker_url, site=cfg.site, json=cfg.json_payloads
            )
        from firmware_tools.sim.ble_link import BleLink

        assert cfg.ble_transport is not None
        return BleLink(node_id, transport=cfg.ble_transport, beacon=cfg.ble_beacon)

    def _close_links(self) -> None:
        for node in self.nodes.values():
            if isinstance(node.link, PtySerialLink):
                node.link.close()
