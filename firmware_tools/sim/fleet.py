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

With ``slots_dir`` and ``fleet_public_key`` set, every node has A/B model slots
(:class:`~firmware_tools.sim.slots.SlotStore` in ``slots_dir/<node_id>``, kept
across runs like a device's flash), answers our model transfer on its serial
port or MQTT topics, runs the model in its active slot and reports the slots in
its Status. ``factory_model`` (a ``.tflite`` with its signed manifest beside it)
is installed into nodes whose slots are empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware_tools.sim.links import Link
from firmware_tools.sim.mqtt_link import MqttLink
from firmware_tools.sim.node import Inferencer, NodeConfig, NodeLogic
from firmware_tools.sim.replay import ReplaySignal
from firmware_tools.sim.runner import SimNode
from firmware_tools.sim.serial_link import PtySerialLink
from firmware_tools.sim.signals import Fault, PumpSignal, SignalSource
from firmware_tools.sim.slots import SlotStore
from firmware_tools.sim.xfer_node import XferNode
from gateway.protocol.manifest import DEFAULT_TARGET, TARGET_CLASSES, ModelManifest

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
    slots_dir: Path | None = None  # model slots per node in slots_dir/<node_id>
    fleet_public_key: Path | bytes | None = None  # PEM/raw key file, or the raw 32 bytes
    target: str = DEFAULT_TARGET  # the nodes' target class (slot size, RAM for the arena)
    factory_model: Path | None = None  # installed into empty slots; signed manifest beside it

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
        if self.target not in TARGET_CLASSES:
            raise ValueError(f"target {self.target!r}: choose from {', '.join(TARGET_CLASSES)}")
        if self.slots_dir is not None and self.fleet_public_key is None:
            raise ValueError("model slots (slots_dir) need fleet_public_key to verify models")
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
        self.xfer_nodes: dict[str, XferNode] = {}
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
        n_channels = len(source.channels)
        store = self._slot_store(node_id)
        if store is None:
            logic = NodeLogic(node_cfg, model=self._model(n_channels), now_ms=self.now_ms())
            return SimNode(logic, source, self._link(index, node_id, None), clock_ms=self.now_ms)
        artifact, manifest = store.active_artifact(), store.active_manifest()
        model = None
        if artifact is not None and manifest is not None:
            model = _slot_model(node_id, artifact, manifest, n_channels)
        logic = NodeLogic(node_cfg, model=model, now_ms=self.now_ms(), slots=store.info)

        def on_model_change(artifact: bytes, manifest: ModelManifest) -> None:
            logic.set_model(_slot_model(node_id, artifact, manifest, n_channels))

        from firmware_tools.sim.selftest import node_self_test

        xfer = XferNode(
            node_id, store, node_self_test(store.ram_bytes), on_model_change=on_model_change
        )
        self.xfer_nodes[node_id] = xfer
        return SimNode(logic, source, self._link(index, node_id, xfer), clock_ms=self.now_ms)

    def _slot_store(self, node_id: str) -> SlotStore | None:
        cfg = self.config
        if cfg.slots_dir is None or cfg.fleet_public_key is None:
            return None
        target = TARGET_CLASSES[cfg.target]
        store = SlotStore.open(
            cfg.slots_dir / node_id,
            public_key=_public_key(cfg.fleet_public_key),
            target=target.name,
            slot_bytes=target.flash_bytes,
            ram_bytes=target.ram_bytes,
        )
        if cfg.factory_model is not None and not store.info():
            from gateway.protocol.signed_manifest import find_signed

            signed_path = find_signed(cfg.factory_model)
            if signed_path is None or signed_path.suffix != ".cbor":
                msg = f"{cfg.factory_model}: no signed manifest (.manifest.cbor) beside it"
                raise ValueError(msg)
            store.install_factory(cfg.factory_model.read_bytes(), signed_path.read_bytes())
        return store

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

    def _link(self, index: int, node_id: str, xfer: XferNode | None) -> Link:
        cfg = self.config
        kind = cfg.transport_of(index)
        if kind == "serial":
            return PtySerialLink(node_id, baud=cfg.baud, pty_dir=cfg.pty_dir, xfer=xfer)
        if kind == "mqtt":
            return MqttLink(
                node_id,
                broker_url=cfg.broker_url,
                site=cfg.site,
                json=cfg.json_payloads,
                xfer=xfer,
            )
        from firmware_tools.sim.ble_link import BleLink

        assert cfg.ble_transport is not None
        return BleLink(node_id, transport=cfg.ble_transport, beacon=cfg.ble_beacon)

    def _close_links(self) -> None:
        for node in self.nodes.values():
            if isinstance(node.link, PtySerialLink):
                node.link.close()


def _public_key(key: Path | bytes) -> Ed25519PublicKey:
    if isinstance(key, bytes):
        return Ed25519PublicKey.from_public_bytes(key)
    from gateway.protocol.signed_manifest import load_public_key

    return load_public_key(key)


def _slot_model(
    node_id: str, artifact: bytes, manifest: ModelManifest, n_channels: int
) -> Inferencer | None:
    """The active slot's model in TFLM, or None when it cannot score this node's readings."""
    from firmware_tools.sim.tflm import TflmModel

    try:
        return TflmModel(
            artifact,
            model_id=manifest.name,
            model_version=manifest.version,
            n_channels=n_channels,
            sequence=manifest.sequence,
        )
    except (ValueError, RuntimeError) as exc:
        _LOGGER.warning("%s: running %s without inference: %s", node_id, manifest.name, exc)
        return None
