"""What the pages and the API show, read from the gateway's stores off the event loop.

Every read runs on one dedicated worker thread that owns read-only connections to the
journal and the alert history (:class:`Reads`), so a page view never blocks ingest and the
connections are never shared between threads. Reads are serialised on that thread: a burst
of page views queues there, not on the loop. The node table and the open alerts are shared
for ``SHARED_FOR_S`` between requests (pages refresh every 1-2 s; with 500 nodes each query
costs 10-15 ms), so several people watching the dashboard cost the gateway about as much as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psutil

from dashboards.models import Artifact, artifacts
from dashboards.view import GatewayView
from gateway.alerts.config import SilentRule
from gateway.events import Alert, AlertEvent, AlertState, ScoreSource
from gateway.store.alerts import AlertStore, alerts_path_for
from gateway.store.history import HistoryReader, InferenceRow, ReadingRow, StatusRow
from gateway.store.journal_reader import JournalReader, NodeRow

T = TypeVar("T")
SHARED_FOR_S = 1.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    status: str  # "ok" | "warning" | "silent"
    transport: str
    last_seen_ms: int
    age_s: float
    rssi_dbm: int | None
    battery_mv: int | None
    firmware_version: str | None
    model: str | None  # "name version (slot n)" of the active slot
    completeness: float
    lost: int
    reboots: int
    open_alerts: int
    gateway_score: float | None
    node_score: float | None


@dataclass(frozen=True, slots=True)
class SystemStats:
    cpu_percent: float
    rss_mb: float
    mem_percent: float
    disk_free_gb: float
    disk_percent: float
    journal_mb: float
    uptime_s: float


@dataclass(frozen=True, slots=True)
class Overview:
    ok: int
    warning: int
    silent: int
    open_alerts: list[Alert]
    system: SystemStats
    healthy: bool


@dataclass(frozen=True, slots=True)
class NodeDetail:
    node: NodeInfo
    readings: list[ReadingRow]
    inferences: list[InferenceRow]
    statuses: list[StatusRow]
    alerts: list[Alert]
    channels: list[str] = field(default_factory=list)


def _active_model(slots: list[dict[str, object]]) -> str | None:
    for slot in slots:
        if slot.get("active"):
            name = slot.get("model_id") or slot.get("name") or "model"
            # The journal keeps SlotInfo's fields (model_version); "version" from older rows.
            version = slot.get("model_version") or slot.get("version") or "?"
            return f"{name} {version} (slot {slot.get('slot', '?')})"
    return None


class Reads:
    """The dashboard's read side. Call :meth:`run` from the loop; it hops to the reader thread."""

    def __init__(self, view: GatewayView) -> None:
        self.view = view
        cfg = view.config
        self._journal_path = cfg.journal_path
        self._alerts_path = alerts_path_for(cfg.journal_path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="web-reads")
        self._journal: JournalReader | None = None
        self._history: HistoryReader | None = None
        self._alerts: AlertStore | None = None
        silent = [
            r.after_s for r in cfg.alerts.effective_rules().values() if isinstance(r, SilentRule)
        ]
        self.silent_after_s = min(silent) if silent else 120.0
        self._shared: dict[str, tuple[float, object]] = {}
        self._hashes: dict[tuple[str, float], str] = {}
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent()  # the first call only starts the measurement

    async def run(self, fn: Callable[[Reads], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self)

    def close(self) -> None:
        def _close() -> None:
            for conn in (self._journal, self._history, self._alerts):
                if conn is not None:
                    conn.close()

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)

    # -- connections (reader thread only) ----------------------------------------------------

    def journal(self) -> JournalReader | None:
        if self._journal is None and self._journal_path.exists():
            self._journal = JournalReader(self._journal_path)
        return self._journal

    def history(self) -> HistoryReader | None:
        if self._history is None and self._journal_path.exists():
            self._history = HistoryReader(self._journal_path)
        return self._history

    def alert_store(self) -> AlertStore:
        if self._alerts is None:
            self._alerts = AlertStore(self._alerts_path).open()
        return self._alerts

    # -- queries (reader thread only) --------------------------------------------------------

    def _node_info(self, row: NodeRow, open_by_node: dict[str, int], now: int) -> NodeInfo:
        age_s = max(0.0, (now - row.last_seen_ms) / 1000)
        alerts = open_by_node.get(row.node_id, 0)
        status = "silent" if age_s > self.silent_after_s else "warning" if alerts else "ok"
        live = self.view.live
        return NodeInfo(
            node_id=row.node_id,
            status=status,
            transport=row.transport,
            last_seen_ms=row.last_seen_ms,
            age_s=age_s,
            rssi_dbm=row.rssi_dbm,
            battery_mv=row.battery_mv,
            firmware_version=row.firmware_version,
            model=_active_model(row.model),
            completeness=row.completeness,
            lost=row.lost,
            reboots=row.reboots,
            open_alerts=alerts,
            gateway_score=live.latest(row.node_id, ScoreSource.GATEWAY),
            node_score=live.latest(row.node_id, ScoreSource.NODE),
        )

    def _recent(self, key: str, fn: Callable[[], T]) -> T:
        now = time.monotonic()
        hit = self._shared.get(key)
        if hit is not None and now - hit[0] < SHARED_FOR_S:
            return hit[1]  # type: ignore[return-value]
        value = fn()
        self._shared[key] = (now, value)
        return value

    def open_alerts(self) -> list[Alert]:
        """Raised and acknowledged alerts, newest first."""
        store = self.alert_store()
        return list(
            self._recent(
                "open",
                lambda: (
                    store.alerts(state=AlertState.RAISED)
                    + store.alerts(state=AlertState.ACKNOWLEDGED)
                ),
            )
        )

    def forget(self) -> None:
        """Drop shared results (after an action, so its page shows the change at once)."""
        self._shared.clear()

    def nodes(self) -> list[NodeInfo]:
        return list(self._recent("nodes", self._nodes))

    def _nodes(self) -> list[NodeInfo]:
        journal = self.journal()
        if journal is None:
            return []
        open_by_node: dict[str, int] = {}
        for alert in self.open_alerts():
            open_by_node[alert.node_id] = open_by_node.get(alert.node_id, 0) + 1
        now = now_ms()
        return [self._node_info(row, open_by_node, now) for row in journal.nodes()]

    def node(self, node_id: str, *, points: int = 300) -> NodeDetail | None:
        info = next((n for n in self.nodes() if n.node_id == node_id), None)
        history = self.history()
        if info is None or history is None:
            return None
        readings = history.readings(node_id, limit=points)
        channels = sorted({name for r in readings for name in r.values})
        return NodeDetail(
            node=info,
            readings=readings,
            inferences=history.inferences(node_id, limit=points),
            statuses=history.statuses(node_id, limit=10),
            alerts=self.alert_store().alerts(node_id=node_id, limit=20),
            channels=channels,
        )

    def readings(self, node_id: str, since_ms: int, limit: int) -> list[ReadingRow]:
        history = self.history()
        return history.readings(node_id, since_ms=since_ms, limit=limit) if history else []

    def inferences(self, node_id: str, since_ms: int, limit: int) -> list[InferenceRow]:
        history = self.history()
        return history.inferences(node_id, since_ms=since_ms, limit=limit) if history else []

    def alerts(self, state: AlertState | None, limit: int) -> list[Alert]:
        return self.alert_store().alerts(state=state, limit=limit)

    def alert(self, alert_id: str) -> Alert | None:
        return self.alert_store().get(alert_id)

    def alert_history(self, limit: int, alert_id: str | None = None) -> list[AlertEvent]:
        return self.alert_store().history(alert_id=alert_id, limit=limit)

    def artifacts(self) -> list[Artifact]:
        return list(self._recent("artifacts", lambda: artifacts(self.view.config, self._hashes)))

    def system(self) -> SystemStats:
        cfg = self.view.config
        disk_dir: Path = cfg.data_dir if cfg.data_dir.exists() else Path(".")
        disk = shutil.disk_usage(disk_dir)
        journal_mb = 0.0
        for suffix in ("", "-wal"):  # committed data may still be in the write-ahead log
            with contextlib.suppress(OSError):
                journal_mb += Path(f"{self._journal_path}{suffix}").stat().st_size / 1e6
        return SystemStats(
            cpu_percent=self._process.cpu_percent(),
            rss_mb=self._process.memory_info().rss / 1e6,
            mem_percent=psutil.virtual_memory().percent,
            disk_free_gb=disk.free / 1e9,
            disk_percent=100.0 * disk.used / disk.total if disk.total else 0.0,
            journal_mb=journal_mb,
            uptime_s=(now_ms() - self.view.started_ms) / 1000,
        )

    def overview(self) -> Overview:
        nodes = self.nodes()
        counts = {"ok": 0, "warning": 0, "silent": 0}
        for node in nodes:
            counts[node.status] += 1
        return Overview(
            ok=counts["ok"],
            warning=counts["warning"],
            silent=counts["silent"],
            open_alerts=self.open_alerts(),
            system=self.system(),
            healthy=self.view.healthy(),
        )
