"""Runs the alert engine between the scoring pipeline and the outputs.

The engine is synchronous and pure CPU except for recording events (SQLite, fsync). So it
evaluates on the event loop, as observations arrive (a batch costs well under a µs per
observation, :meth:`AlertEngine.observe_many`), and only its events go to the alert store's
own thread, to be recorded durably before they are delivered, in order: a slow disk delays
alerts, not ingest, and observations that raise nothing (nearly all) never leave the loop.
(Until issue 17 every batch went to an alerts thread and back: a hand-off on the critical
path, and a queue behind the previous evaluation.) The events go to that thread as soon as
they are made, and the thread schedules their delivery on the loop itself once they are
recorded: one hop each way, where waking a recording task and resuming it after the
executor's future took two more loop iterations, each a wait behind whatever else the loop
was doing under load.

Before the engine is ready (its store opening), observations wait in a bounded queue.
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
from typing import NamedTuple, TypeVar

from gateway.alerts.config import AlertsConfig, SilenceWindow
from gateway.alerts.engine import AlertEngine
from gateway.events import AlertEvent, ChannelReading, Observation
from gateway.store.alerts import AlertStore

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

EventSink = Callable[[AlertEvent], None]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Recording(NamedTuple):
    events: list[AlertEvent]
    done: asyncio.Future[None] | None  # set once delivered, for whoever waits


def _nothing() -> None:
    """An executor barrier: returns once everything submitted before it has run."""


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
        self._pending: deque[Observation] = deque()  # while the engine is not ready
        # Events waiting to be recorded, then delivered (with a future for whoever waits),
        # in the order the engine made them.
        self._unrecorded: deque[_Recording] = deque()
        self._drained: list[AlertEvent] = []  # recorded at shutdown, delivered after
        # Hands a recording to the alert store's thread; None until the engine is open and
        # from the start of shutdown on (what waits then is recorded by _drain_unrecorded).
        self._recorder: Callable[[_Recording], None] | None = None
        self._failed: asyncio.Future[None] | None = None  # what _watch waits on
        self._broken = False  # recording raised: nothing more is delivered
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts")
        self.engine: AlertEngine | None = None
        self.ready = asyncio.Event()
        self.dropped = 0
        self.evaluated = 0
        self.events = 0

    def submit(self, observations: Sequence[Observation]) -> None:
        """Evaluate observations (on the loop, non-blocking; the pipeline's sink); queued
        while the engine is not ready."""
        engine = self.engine
        if engine is not None and not self._pending:
            self.evaluated += len(observations)
            self._record_then_emit(engine.observe_many(list(observations)))
            return
        self._pending.extend(observations)
        if len(self._pending) > self._max_pending:
            self._shed()

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
        event = self._require().acknowledge(alert_id, by, comment, _now_ms())
        await self._recorded([event])
        return event

    async def clear(self, alert_id: str, by: str, comment: str) -> AlertEvent:
        """A person clears an open alert (the dashboard calls this)."""
        event = self._require().clear(alert_id, by, comment, _now_ms())
        await self._recorded([event])
        return event

    async def add_silence(self, window: SilenceWindow) -> None:
        """Apply a maintenance window decided at run time (on the engine's thread)."""
        self._require().add_silence(window)

    def _require(self) -> AlertEngine:
        if self.engine is None:
            raise RuntimeError("alert engine is not running yet")
        return self.engine

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        notify = self._on_store_fault

        def on_fault(cause: str | None) -> None:  # on the store's thread
            if notify is not None:
                loop.call_soon_threadsafe(notify, cause)

        store = self._store = AlertStore(self._store_path, on_fault=on_fault)
        engine: AlertEngine | None = None
        try:
            engine = await self._call(
                lambda: AlertEngine(self.config, store.open(), defer_record=True)
            )
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
            failed = self._failed = loop.create_future()
            self._recorder = functools.partial(self._submit_recording, engine, loop)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch(failed), name="alerts:record")
                tg.create_task(self._evaluate(engine), name="alerts:evaluate")
                tg.create_task(self._tick(engine), name="alerts:tick")
        finally:
            loop = asyncio.get_running_loop()
            self._recorder = None
            try:
                # The recordings already handed over finish first (one thread, in order), and
                # their deliveries were scheduled before this returns.
                await loop.run_in_executor(self._executor, _nothing)
                if engine is not None and not self._broken:  # (again, it would hide the cause)
                    # Evaluated before the stop: record and deliver them, as the journal
                    # commits what the sources already handed over.
                    await loop.run_in_executor(self._executor, self._drain_unrecorded, engine)
            finally:
                await loop.run_in_executor(self._executor, store.close)
                self._executor.shutdown(wait=True)
            self._emit_drained()

    async def _evaluate(self, engine: AlertEngine) -> None:
        """Evaluate what waited for the engine, then hand over to :meth:`submit`."""
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), 5000))]
            self.evaluated += len(batch)
            self._record_then_emit(engine.observe_many(batch))
            await asyncio.sleep(0)  # a long backlog does not hold the loop
        self.engine = engine
        self.ready.set()

    def _record_then_emit(
        self, events: list[AlertEvent], done: asyncio.Future[None] | None = None
    ) -> None:
        """Record ``events`` (the store's thread), then deliver them, after those waiting."""
        if not events and done is None:
            return
        # Left in the queue until delivered: a stop meanwhile records (idempotently) and
        # delivers it at shutdown.
        recording = _Recording(events, done)
        self._unrecorded.append(recording)
        if self._recorder is not None:
            self._recorder(recording)

    async def _recorded(self, events: list[AlertEvent]) -> None:
        """Record and deliver ``events`` after those already waiting; return once done."""
        done = asyncio.get_running_loop().create_future()
        self._record_then_emit(events, done)
        await done

    def _submit_recording(
        self, engine: AlertEngine, loop: asyncio.AbstractEventLoop, recording: _Recording
    ) -> None:
        self._executor.submit(self._record_on_thread, engine, loop, recording)

    def _record_on_thread(
        self, engine: AlertEngine, loop: asyncio.AbstractEventLoop, recording: _Recording
    ) -> None:
        """On the alert store's thread: record, then have the loop deliver (in order: one
        thread records, and call_soon_threadsafe keeps the order it was called in)."""
        try:
            engine.record(recording.events)
        except BaseException as exc:
            loop.call_soon_threadsafe(self._recording_failed, exc)
            return
        loop.call_soon_threadsafe(self._deliver_recorded, recording)

    def _deliver_recorded(self, recording: _Recording) -> None:
        if self._broken:
            return  # recorded after one that failed: delivering it would skip that one
        head = self._unrecorded.popleft()
        assert head is recording, "alert recordings completed out of order"
        self._emit(recording.events)
        if recording.done is not None and not recording.done.done():
            recording.done.set_result(None)

    def _recording_failed(self, exc: BaseException) -> None:
        self._broken = True
        if self._failed is not None and not self._failed.done():
            self._failed.set_exception(exc)

    @staticmethod
    async def _watch(failed: asyncio.Future[None]) -> None:
        """Fail the runner (its task group) when recording raised (a fault of the disk is
        handled by the store itself: this is a bug)."""
        await failed

    def _drain_unrecorded(self, engine: AlertEngine) -> None:
        events = [ev for batch, _ in self._unrecorded for ev in batch]
        if events:
            engine.record(events)
            self._drained = events

    def _emit_drained(self) -> None:
        events, self._drained = self._drained, []
        self._emit(events)
        for _, done in self._unrecorded:
            if done is not None and not done.done():
                done.set_result(None)
        self._unrecorded.clear()

    async def _tick(self, engine: AlertEngine) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval_s)
            self._record_then_emit(engine.tick(_now_ms()))
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
