"""The one place that creates the gateway's components and connects them.

Components receive only their own config section and their queues (invariant "One place
wires things"). ``Gateway.run`` is the whole service: one TaskGroup, named tasks,
cancelled as one on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from gateway.alerts.runner import AlertRunner
from gateway.alerts.system import SystemAlert
from gateway.alerts.urgency import ThresholdScreen
from gateway.config import GatewayConfig
from gateway.downlink import Downlinks
from gateway.events import AlertEvent, Severity
from gateway.forward.forwarder import Forwarder
from gateway.identity.gate import ADMISSION_RATE, PIN_MISMATCH, REGISTRY_FULL, NodeGate
from gateway.identity.pins import PinStore, pins_path_for
from gateway.ingest import IngestQueue
from gateway.metrics import Metrics, serve_metrics
from gateway.metrics_exposition import NodeFigures
from gateway.outputs.bus import AlertBus
from gateway.outputs.dispatch import AlertOutputs
from gateway.pipeline.model_inbox import ModelInbox
from gateway.pipeline.model_state import ModelState, model_dir_for
from gateway.pipeline.pipeline import ScoringPipeline
from gateway.service_notify import ServiceNotifier
from gateway.store.alerts import alerts_path_for
from gateway.store.baselines import baselines_path_for
from gateway.store.journal import Journal
from gateway.store.journal_reader import JournalReader
from gateway.store.writer import JournalWriter

if TYPE_CHECKING:
    from dashboards.view import GatewayView as DashboardView

_LOGGER = logging.getLogger(__name__)


class Source(Protocol):
    ready: asyncio.Event

    @property
    def name(self) -> str: ...

    async def run(self) -> None: ...


class Gateway:
    def __init__(self, config: GatewayConfig, notifier: ServiceNotifier | None = None) -> None:
        self.config = config
        # Outside a service manager this does nothing (no $NOTIFY_SOCKET).
        self.notifier = notifier or ServiceNotifier(None)
        self.metrics = Metrics()
        # A reading that may raise a threshold alert is not held back for a group commit.
        self.queue = IngestQueue(
            config.queue.max_messages,
            config.queue.overflow,
            urgent=ThresholdScreen.from_config(config.alerts),
        )
        self.journal = Journal(
            config.journal_path,
            synchronous=config.journal.synchronous,
            skew_limit_ms=config.skew_limit_ms,
            max_seq_jump=config.journal.max_seq_jump,
        )
        self.writer = JournalWriter(self.journal, self.queue, config.journal, self.metrics)
        self.downlinks = Downlinks()
        # Pins, the registry cap and new-node admission, checked by every source before a
        # message is stored (invariant "Trust is earned, state is bounded").
        self.pins = PinStore(pins_path_for(config.data_dir), config.nodes.pins)
        self.gate = NodeGate(
            config.nodes,
            self.pins,
            allowed=frozenset(config.allowed_nodes),
            alert_sink=self._deliver_alert,
        )
        self.sources: list[Source] = self._make_sources()
        # The local decision path (invariant "The local path never waits for the network"):
        # journal → scoring → alerts → outputs, none of which waits for the broker or the network.
        self.alert_bus = AlertBus()
        self.outputs = AlertOutputs(
            config.outputs, self.alert_bus, self.downlinks, config.data_dir, site=config.site
        )
        self.alerts = AlertRunner(
            config.alerts,
            alerts_path_for(config.journal_path),
            self._deliver_alert,
            seen_nodes=self._last_seen,
            on_store_fault=self._on_alert_store_fault,
        )
        # Always present: with scoring disabled it still turns commits into the readings,
        # health and gap observations the other alert rules need.
        self.model_state = ModelState(model_dir_for(config.data_dir))
        self.pipeline = ScoringPipeline(
            config.scoring,
            baselines_path=baselines_path_for(config.journal_path),
            model_state=self.model_state,
        )
        # The hot-swap trigger: signed models dropped in <data_dir>/gateway-model/incoming/.
        self.model_inbox = ModelInbox(
            self.model_state,
            self.pipeline.swap_model,
            SystemAlert("gateway_model_rejected", self._deliver_alert, Severity.WARNING),
            config.scoring.model_inbox_poll_s,
        )
        self.writer.add_listener(self.pipeline.on_commit)
        self.pipeline.add_sink(self.alerts.submit)
        self.pipeline.observe_channels(
            frozenset(rule.channel for rule in config.alerts.threshold_rules())
        )
        # Upstream (docs/forwarding.md): off unless [forward] is enabled; it only listens.
        self.forwarder: Forwarder | None = None
        if config.forward.enabled:
            self.forwarder = Forwarder(
                config.forward,
                site=config.site,
                journal_path=config.journal_path,
                backlog_path=config.forward.backlog_path(config.data_dir),
                alert_sink=self._deliver_alert,
                gateway_model=self._gateway_model,
            )
            self.writer.add_listener(self.forwarder.on_commit)
            self.pipeline.add_sink(self.forwarder.on_observations)
        # A disk that refuses writes stops acknowledgements; staff hear it on the paths that
        # need no disk (live view, dashboard, local MQTT, script hook).
        self.storage_alert = SystemAlert("journal_storage", self._deliver_alert)
        self.alert_store_alert = SystemAlert("alert_storage", self._deliver_alert)
        self.writer.add_fault_listener(self._on_journal_fault)
        self.metrics_ready = asyncio.Event()
        self.web_ready = asyncio.Event()
        self.web_view = self._make_web_view() if config.web.enabled else None
        self.metrics.gauges["queue_depth"] = lambda: float(self.queue.qsize())
        self.metrics.counter_fns["queue_dropped"] = (
            "Messages a full ingest queue dropped (never acknowledged: nodes resend them).",
            lambda: float(sum(self.queue.dropped.values())),
        )
        self.metrics.counter_fns["alert_events"] = (
            "Alert events handed to the outputs.",
            lambda: float(self.outputs.delivered_events),
        )
        if self.outputs.outbox is not None:
            outbox = self.outputs.outbox
            self.metrics.counter_fns["outbox_refused"] = (
                "Notifications (not alerts) the outbox refused over outputs.outbox.max_bytes.",
                lambda: float(outbox.refused),
            )
            self.metrics.gauges["outbox_pending_bytes"] = lambda: float(outbox.pending_bytes)
        self.metrics.node_figures = self._node_figures
        self.metrics.node_scores = self.pipeline.fusion.latest
        self.metrics.gauges["journal_bytes"] = self._journal_bytes
        if self.forwarder is not None:
            self.metrics.gauges.update(self.forwarder.gauges())
        self.metrics.gauges["journal_degraded"] = lambda: float(self.writer.fault is not None)
        self.metrics.gauges["nodes_admitted"] = lambda: float(self.gate.admitted)
        for reason, what in (
            (REGISTRY_FULL, "a new node id while the registry held nodes.max_nodes"),
            (ADMISSION_RATE, "a new node id over nodes.new_per_minute"),
            (PIN_MISMATCH, "not from the channel its node is pinned to"),
        ):
            self.metrics.counter_fns[f"nodes_refused_{reason}"] = (
                f"Messages refused before the journal: {what}.",
                self.gate.refused_for(reason),
            )

    def _on_journal_fault(self, fault: str | None) -> None:
        if fault is None:
            self.storage_alert.clear()
        else:
            self.storage_alert.raise_(
                f"the journal cannot write ({fault}): nothing new is acknowledged; nodes and "
                "the broker keep their data until the disk has room again"
            )

    def _on_alert_store_fault(self, fault: str | None) -> None:
        if fault is None:
            self.alert_store_alert.clear()
        else:
            self.alert_store_alert.raise_(
                f"the alert history cannot be written ({fault}): alerts still reach the "
                "outputs; their history is kept in memory until the disk has room"
            )

    def _deliver_alert(self, event: AlertEvent) -> None:
        self.outputs.deliver(event)
        if self.forwarder is not None:
            self.forwarder.on_alert_event(event)

    def _gateway_model(self) -> tuple[str, str]:
        info = self.pipeline.model_info
        return info.name, info.sha256[:16]

    def _make_web_view(self) -> DashboardView:
        # The dashboard sees the gateway only through this view (dashboards/view.py).
        from dashboards.view import GatewayView, LiveScores

        live = LiveScores()
        self.pipeline.add_sink(live)
        return GatewayView(
            config=self.config,
            alerts=self.alerts,
            live=live,
            healthy=self.healthy,
            engine_ready=self.alerts.ready.wait,
        )

    def _journal_bytes(self) -> float:
        try:
            return float(self.config.journal_path.stat().st_size)
        except OSError:
            return 0.0

    def _node_figures(self) -> list[NodeFigures]:
        """Per-node rows for /metrics, from the journal's registry (rendering thread)."""
        if not self.config.journal_path.exists():
            return []
        reader = JournalReader(self.config.journal_path)
        try:
            return [
                NodeFigures(r.node_id, r.last_seen_ms, r.received, r.lost, r.completeness)
                for r in reader.nodes()
            ]
        finally:
            reader.close()

    def _last_seen(self) -> dict[str, int]:
        """The journal's nodes that are admitted at start-up: the newest ``nodes.max_nodes``
        (and only allowed ones when ``allowed_nodes`` is set). Only these enter alerting:
        made-up ids left in an older journal never raise "node silent"."""
        if not self.config.journal_path.exists():
            return {}
        reader = JournalReader(self.config.journal_path)
        try:
            rows = reader.nodes()
        finally:
            reader.close()
        allowed = frozenset(self.config.allowed_nodes)
        seen = sorted(
            ((r.last_seen_ms, r.node_id) for r in rows if not allowed or r.node_id in allowed),
            reverse=True,
        )[: self.config.nodes.max_nodes]
        return {node_id: last_seen for last_seen, node_id in seen}

    def _load_nodes(self) -> None:
        """Pins from their file, admitted nodes from the journal (blocking; before sources)."""
        self.pins.load(forget=self.config.nodes.unpin)
        self.gate.seed(self._last_seen())

    def _make_sources(self) -> list[Source]:
        cfg = self.config
        allowed = frozenset(cfg.allowed_nodes)
        sources: list[Source] = []
        if cfg.mqtt.enabled:
            from gateway.sources.mqtt import MqttSource

            mqtt = MqttSource(
                cfg.mqtt,
                cfg.site,
                self.queue,
                self.metrics,
                allowed,
                downlinks=self.downlinks,
                gate=self.gate,
            )
            sources.append(mqtt)
            # What the gateway holds from the broker without a PUBACK yet, and how often a
            # full ingest queue paused reading from it (the backlog then waits at the broker).
            self.metrics.gauges["mqtt_unacked"] = lambda: float(mqtt.received - mqtt.pubacked)
            self.metrics.gauges["mqtt_read_pauses"] = lambda: float(mqtt.read_pauses)
        if cfg.serial.ports:
            from gateway.sources.serial import SerialSource

            sources.extend(
                SerialSource(
                    port,
                    cfg.serial,
                    self.queue,
                    self.metrics,
                    allowed,
                    downlinks=self.downlinks,
                    gate=self.gate,
                )
                for port in cfg.serial.ports
            )
        if cfg.ble.enabled:
            from gateway.sources.ble import BleSource

            sources.append(
                BleSource(
                    cfg.ble,
                    self.queue,
                    self.metrics,
                    allowed,
                    downlinks=self.downlinks,
                    session_share_s=cfg.ble.session_share_s,
                    gate=self.gate,
                )
            )
        return sources

    def healthy(self) -> bool:
        """All sources connected and the journal open."""
        return self.writer.ready.is_set() and all(s.ready.is_set() for s in self.sources)

    async def wait_ready(self) -> None:
        await self.writer.ready.wait()
        for source in self.sources:
            await source.ready.wait()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.writer.run(), name="journal:writer")
            fwd = self.forwarder
            tg.create_task(
                self.writer.run_retention(
                    self.config.journal.raw_budget_bytes,
                    before_evict=fwd.catch_up if fwd is not None else None,
                ),
                name="journal:retention",
            )
            if fwd is not None:
                tg.create_task(fwd.run(self.writer.ready), name="forward")
            if self.config.metrics.enabled:
                m = self.config.metrics
                tg.create_task(
                    serve_metrics(self.metrics, m.host, m.port, self.metrics_ready),
                    name="metrics:http",
                )
            if self.web_view is not None:
                from dashboards.server import serve_dashboard

                tg.create_task(serve_dashboard(self.web_view, self.web_ready), name="web:dashboard")
            tg.create_task(self.outputs.run(), name="alerts:outputs")
            tg.create_task(self.pipeline.run(), name="pipeline:scoring")
            if self.config.scoring.enabled:
                tg.create_task(self.model_inbox.run(self.pipeline.ready), name="pipeline:inbox")
            await self.writer.ready.wait()
            if self.journal.set_aside is not None:
                SystemAlert("journal_set_aside", self._deliver_alert, Severity.WARNING).raise_(
                    f"the journal was damaged ({self.journal.set_aside_reason}) and moved to "
                    f"{self.journal.set_aside}; a new one was started. Salvage it with "
                    f"`fieldgate journal recover {self.journal.set_aside}`"
                )
            # Before any source: the pins, and the nodes the journal already admitted.
            await asyncio.to_thread(self._load_nodes)
            tg.create_task(self.gate.run(), name="nodes:gate")
            # After the journal is open: the engine seeds "node silent" from its node registry.
            tg.create_task(self.alerts.run(), name="alerts:engine")
            for source in self.sources:
                tg.create_task(source.run(), name=source.name)
            # Ready once the journal is open: the local path works from here on even while
            # a broker or radio is still connecting ("the local path never waits").
            self.notifier.ready(f"journal open, {len(self.sources)} source(s) starting")
            tg.create_task(
                self.notifier.run_watchdog(self.writer.ready.is_set), name="service:watchdog"
            )


def _hard_exit() -> None:
    # Every journal commit is one atomic transaction, so leaving now is as safe as kill -9:
    # nothing acknowledged is lost; unacknowledged data is resent by the nodes.
    os._exit(70)


def freeze_startup_heap() -> None:
    """Exempt everything alive now (modules, config, models) from cyclic garbage collection.

    Call once start-up is done. Those objects live as long as the process, yet every full
    collection walked them all again: tens of milliseconds each, a quarter of the CPU of a
    busy ingest (bench.ingest). Reference counting still frees them; only the cycle
    detector skips them, so call it where no garbage cycles are left (it collects first).
    """
    gc.collect()
    gc.freeze()


async def run_until_signalled(
    gateway: Gateway, *, on_overrun: Callable[[], None] = _hard_exit
) -> None:
    """Run until SIGTERM/SIGINT, then shut down within ``shutdown_grace_s``.

    The first signal cancels the gateway, which drains: the journal commits what the sources
    handed over and acknowledges it, outputs flush. If that takes longer than the grace
    period (a wedged disk or link), or a second signal arrives, ``on_overrun`` ends the
    process.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = asyncio.create_task(gateway.run(), name="gateway")
    stopper = asyncio.create_task(stop.wait(), name="gateway:signals")
    try:
        await asyncio.wait({service, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if service.done():
            service.result()  # a crash: let it propagate
            return
        grace = gateway.config.shutdown_grace_s
        _LOGGER.info("shutting down (grace %.1f s)", grace)
        gateway.notifier.stopping()
        stop.clear()
        service.cancel()
        second = asyncio.create_task(stop.wait(), name="gateway:second-signal")
        done, _ = await asyncio.wait(
            {service, second}, timeout=grace, return_when=asyncio.FIRST_COMPLETED
        )
        second.cancel()
        if service not in done:
            _LOGGER.error(
                "shutdown did not finish within %.1f s%s; exiting now",
                grace,
                " (second signal)" if second in done else "",
            )
            on_overrun()
            return
        with contextlib.suppress(asyncio.CancelledError):
            service.result()
        _LOGGER.info("stopped")
    finally:
        stopper.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
