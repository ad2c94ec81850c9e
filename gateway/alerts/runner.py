"""Runs the alert engine on its own thread and hands its events to the outputs.

The engine is synchronous and writes every alert event durably (SQLite, fsync) before it
returns it, so it runs on one worker thread, never on the event loop: a slow disk delays
alerts, not ingest. Observations arrive in batches from the scoring pipeline (on the loop);
they wait in a bounded queue and are evaluated in order, whatever accumulated while the
engine was busy going in one call.

Overflow policy: when more than ``max_pending`` observations wait, the oldest plain channel
readings are dropped (counted in ``dropped``); scores, health, gaps and disagreements are
never dropped, since they are few and each can raise or clear an alert on its own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateway.alerts.config import AlertsConfig, SilenceWindow
from gateway.alerts.engine import AlertEngine
from gateway.events import AlertEvent, ChannelReading, Observation
from gateway.store.alerts import AlertStore

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

EventSink = Callable[[AlertEvent], None]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class AlertRunner:
    def __init__(
        self,
        config: AlertsConfig,
        store_path: Path,
        deliver: EventSink,
        *,
        max_pending: int = 200_000,
        seen_nodes: Callable[[], dict[str, int]] | None = None,
        on_store_fault: Callable[[str | None], None] | None = None,
    ) -> None:
        self.config = config
        self._store_path = store_path
        self._deliver = deliver
        self._max_pending = max_pending
        self._seen_nodes = seen_nodes
        # Called on the loop when the alert store's disk fails (the cause) and recovers (None).
        self._on_store_fault = on_store_fault
        self._store: AlertStore | None = None
        self._pending: deque[Observation] = deque()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts")
        self.engine: AlertEngine | None = None
        self.ready = asyncio.Event()
        self.dropped = 0
        self.evaluated = 0
        self.events = 0

    def submit(self, observations: Sequence[Observation]) -> None:
        """Queue observations for evaluation (non-blocking; the pipeline's sink)."""
        self._pending.extend(observations)
        if len(self._pending) > self._max_pending:
            self._shed()
        self._wake.set()

    def _shed(self) -> None:
        excess = len(self._pending) - self._max_pending
        kept: deque[Observation] = deque()
        for obs in self._pending:
            if excess > 0 and isinstance(obs, ChannelReading):
                excess -= 1
                self.dropped += 1
                continue
            kept.append(obs)
        self._pending = kept
        _LOGGER.warning("alerts: evaluation behind; %d channel readings dropped", self.dropped)

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def acknowledge(self, alert_id: str, by: str, comment: str) -> AlertEvent:
        """Acknowledge an open alert (the dashboard calls this); delivered like any event."""
        engine = self._require()
        event = await self._call(lambda: engine.acknowledge(alert_id, by, comment, _now_ms()))
        self._emit([event])
        return event

    async def clear(self, alert_id: str, by: str, comment: str) -> AlertEvent:
        """A person clears an open alert (the dashboard calls this)."""
        engine = self._require()
        event = await self._call(lambda: engine.clear(alert_id, by, comment, _now_ms()))
        self._emit([event])
        return event

    async def add_silence(self, window: SilenceWindow) -> None:
        """Apply a maintenance window decided at run time (on the engine's thread)."""
        engine = self._require()
        await self._call(lambda: engine.add_silence(window))

    def _require(self) -> AlertEngine:
        if self.engine is None:
            raise RuntimeError("alert engine is not running yet")
        return self.engine

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        notify = self._on_store_fault

        def on_fault(cause: str | None) -> None:  # on the engine's thread
            if notify is not None:
                loop.call_soon_threadsafe(notify, cause)

        store = self._store = AlertStore(self._store_path, on_fault=on_fault)
        try:
            self.engine = await self._call(lambda: AlertEngine(self.config, store.open()))
            engine = self.engine
            if self._seen_nodes is not None:
                seen = await self._call(self._seen_nodes)
                for node_id, last_seen in seen.items():
                    engine.track_node(node_id, last_seen)
            _LOGGER.info(
                "alerts: %d rules, %d open alerts (%s)",
                len(engine.rules),
                len(engine.open_alerts()),
                self._store_path,
            )
            self.ready.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._evaluate(engine), name="alerts:evaluate")
                tg.create_task(self._tick(engine), name="alerts:tick")
        finally:
            await asyncio.get_running_loop().run_in_executor(self._executor, store.close)
            self._executor.shutdown(wait=True)

    async def _evaluate(self, engine: AlertEngine) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = list(self._pending)
                self._pending.clear()
                events = await self._call(functools.partial(engine.observe_many, batch))
                self.evaluated += len(batch)
                self._emit(events)

    async def _tick(self, engine: AlertEngine) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval_s)
            self._emit(await self._call(lambda: engine.tick(_now_ms())))
            store = self._store
            if store is not None and store.fault is not None:
                await self._call(store.flush)  # the disk may have room again

    def _emit(self, events: list[AlertEvent]) -> None:
        for event in events:
            self.events += 1
            _LOGGER.info(
                "alert %s %s: %s (%s)",
                event.kind.value,
                event.alert.alert_id,
                event.alert.message,
                event.alert.severity.name.lower(),
            )
            self._deliver(event)
