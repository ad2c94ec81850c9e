"""The forwarder: journal → summaries → backlog → store, as two named tasks.

``forward:summarise`` wakes every second or so on the forwarder's own thread: reads the
journal's new readings, closes finished intervals, and stores their points, the alert and
node-status events that arrived since, and the summariser state in one transaction.
``forward:drain`` sends the backlog in batches (size and age), rate-limited, and advances
the destination's checkpoint only on a 2xx; it retries with exponential backoff and
jitter, honours ``Retry-After``, quarantines a refused (400) batch and goes on, and on
401/403 raises a local operator alert and keeps everything.

The local path never waits for this (architecture invariant 3): the listeners only append
to bounded lists; all I/O is on the forwarder's thread or the network.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateway.events import Alert, AlertEvent, AnomalyScore, Observation
from gateway.forward.backlog import Backlog, Batch
from gateway.forward.config import ForwardConfig
from gateway.forward.ladder import EVICTION_KINDS
from gateway.forward.operator import AuthAlert
from gateway.forward.points import ALERT, FORWARD, Point, PointClass, point
from gateway.forward.sender import Outcome, Sender, Verdict
from gateway.forward.status import StatusEvents
from gateway.forward.storage import StorageFaults, lock_backlog, requeue
from gateway.forward.summarise import Summariser
from gateway.forward.tail import JournalTail
from gateway.protocol.messages import Status
from gateway.store.journal import CommitResult

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

# Bounds on what waits on the loop between two ticks; past them the oldest status events and
# scores go (counted). Alert events are never dropped: they are few and each one matters.
MAX_PENDING_EVENTS = 10_000
MAX_PENDING_SCORES = 200_000
_RATE_WINDOW_S = 60.0
MAX_RETRY_AFTER_S = 3600.0  # a Retry-After beyond this is a misconfigured store, not advice
BACKFILL_CHUNK = 20_000  # journal rows between early interval closes while catching up
READ_CHUNK = 2_000  # rows per read: all alive at once (docs/benchmarks.md, the gateway's memory)
_NARROW = (Verdict.REFUSED, Verdict.TOO_LARGE)  # answers about the batch itself


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Forwarder:
    def __init__(
        self,
        config: ForwardConfig,
        *,
        site: str,
        journal_path: Path,
        backlog_path: Path,
        alert_sink: Callable[[AlertEvent], None] | None = None,
        gateway_model: Callable[[], tuple[str, str]] | None = None,
    ) -> None:
        """``alert_sink`` receives the operator alert (401/403); ``gateway_model`` names the
        gateway model in use as (name, hash) for the score tags."""
        self.config = config
        self.site = site
        self.dest = config.destination
        self._journal_path = journal_path
        self._alert_sink = alert_sink
        self._gateway_model = gateway_model
        self.backlog = Backlog(
            backlog_path,
            config.budgets,
            precision=config.precision,
            downsample_factor=config.downsample_factor,
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._summariser: Summariser | None = None
        self._tail: JournalTail | None = None
        self._events: deque[Point] = deque()
        self._status = StatusEvents(site)
        self._alerts: list[Point] = []
        self._alert_counts: list[tuple[str, int, str]] = []
        self._scores: list[AnomalyScore] = []
        self._wake_drain = asyncio.Event()
        self._reported: dict[str, int] = {}
        self._late_seen = 0
        self.ready = asyncio.Event()
        self.idle = asyncio.Event()  # set while nothing waits to be sent
        # What metrics and `forward status` show.
        self.delivered_points = 0
        self.quarantined_batches = 0
        self.dropped_events = 0
        self.dropped_scores = 0
        self.retries = 0
        self.online: bool | None = None  # None: nothing tried yet
        self._auth = AuthAlert(self._emit, _now_ms)
        self.storage = StorageFaults(backlog_path, self._emit, _now_ms,
                                     retry_first_s=config.retry_first_s, retry_max_s=config.retry_max_s)  # fmt: skip
        self._stale = False  # a tick failed on the disk: reload the summariser from the backlog
        self._durable_from = 0  # replay_from_id as last stored (retention holds there)
        self.last_error = ""
        self._oldest_enq_ms: int | None = None
        self._delivered_log: deque[tuple[float, int, int]] = deque()  # (t, points, bytes)
        self._enqueued_log: deque[tuple[float, int]] = deque()  # (t, bytes)

    # -- listeners (on the event loop; never block) -------------------------------------------

    def on_commit(self, result: CommitResult) -> None:
        """Journal listener: node status changes become events (readings are read later)."""
        for env, new, wall_ms in zip(
            result.envelopes, result.new_counts, result.wall_ms, strict=False
        ):
            msg = env.msg
            if not new or not isinstance(msg, Status):
                continue
            event = self._status.offer(msg, wall_ms[0] if wall_ms else env.rx_ms, env.rssi_dbm)
            if event is not None:
                self._events.append(event)
            if len(self._events) > MAX_PENDING_EVENTS:
                self._events.popleft()
                self.dropped_events += 1

    def on_observations(self, observations: Sequence[Observation]) -> None:
        """Pipeline sink: anomaly scores for the per-interval score summaries."""
        self._scores.extend(o for o in observations if isinstance(o, AnomalyScore))
        if len(self._scores) > MAX_PENDING_SCORES:  # only while the forwarder cannot keep up
            excess = len(self._scores) - MAX_PENDING_SCORES
            del self._scores[:excess]
            self.dropped_scores += excess

    def on_alert_event(self, event: AlertEvent) -> None:
        """Every alert event the gateway delivers (raised, acknowledged, cleared...)."""
        a = event.alert
        tags = {"site": self.site, "node": a.node_id, "rule": a.rule,
                "severity": a.severity.name.lower(), "kind": event.kind.value, "alert_id": a.alert_id}  # fmt: skip
        fields: dict[str, float | int | bool | str] = {
            "severity_level": int(a.severity),
            "escalations": a.escalations,
        }
        if a.value is not None:
            fields["value"] = float(a.value)
        self._alerts.append(point(ALERT, tags, fields, event.at_ms))
        self._alert_counts.append((a.node_id, event.at_ms, event.kind.value))

    # -- lifecycle ----------------------------------------------------------------------------

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def run(
        self, journal_ready: asyncio.Event | None = None, *, summarise: bool = True
    ) -> None:
        """Summarise and drain until cancelled (``summarise=False``: drain only, the CLI)."""
        lock: int | None = None
        try:
            lock = await lock_backlog(self.backlog.path)
            await self.storage.durably("open", lambda: self._call(self.backlog.open))
            state = await self.storage.durably("open", lambda: self._call(self.backlog.load_state))
            c = self.config
            self._restore(state, summarise=summarise)
            if journal_ready is not None:
                await journal_ready.wait()
            if summarise:
                await self._call(self._open_tail)
            await self._call(self._refresh)
            self.ready.set()
            _LOGGER.info(
                "forward: to %s (bucket %s), %d points waiting",
                c.url, c.bucket, self.backlog.stats().total_points,
            )  # fmt: skip
            async with asyncio.TaskGroup() as tg:
                if summarise:
                    tg.create_task(self._summarise_loop(), name="forward:summarise")
                tg.create_task(self._drain_loop(), name="forward:drain")
        finally:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
            self._executor.shutdown(wait=True)
            if lock is not None:
                os.close(lock)  # releases the flock

    def _restore(self, state: dict[str, object], *, summarise: bool = True) -> None:
        """The summariser and loss report as last stored in the backlog."""
        c = self.config
        if summarise:
            self._summariser = Summariser(
                self.site,
                round(c.interval_s * 1000),
                round(c.late_grace_s * 1000),
                raw_channels=c.raw_channels,
                raw_every=c.raw_every,
                state=state,
            )
            self._durable_from = self._summariser.replay_from_id
        self._reported = dict(state.get("reported", {}))  # type: ignore[call-overload]
        self._late_seen = 0

    def _open_tail(self) -> None:
        if self._journal_path.exists():
            self._tail = JournalTail(self._journal_path)

    def _close(self) -> None:
        if self._tail is not None:
            self._tail.close()
        self.backlog.close()

    # -- summarising --------------------------------------------------------------------------

    async def _summarise_loop(self) -> None:
        tick = min(1.0, self.config.interval_s / 4)
        while True:
            await self.summarise_now()
            await asyncio.sleep(tick)

    async def summarise_now(self, now_ms: int | None = None) -> int:
        """Consume the journal, close finished intervals, store points; returns points stored.

        On a disk fault nothing is consumed: the pending lists get their items back and the
        summariser restarts from its stored state (the journal still holds the readings)."""
        if not (self.storage.due("summarise") and self.storage.due("budgets")):
            return 0
        events, self._events = list(self._events), deque()
        alerts, self._alerts = self._alerts, []
        counts, self._alert_counts = self._alert_counts, []
        scores, self._scores = self._scores, []
        model = self._gateway_model() if self._gateway_model is not None else ("", "")
        before = self.backlog.enqueued_bytes
        stored = await self.storage.attempt("summarise", lambda: self._call(
            lambda: self._tick(now_ms or _now_ms(), events + alerts, counts, scores, model)))  # fmt: skip
        if stored is None:  # the disk refused: give everything back, rebuild from the journal
            self._stale = True
            self.dropped_events += requeue(self._events, events, MAX_PENDING_EVENTS)
            self._alerts[:0], self._alert_counts[:0], self._scores[:0] = alerts, counts, scores
            self.dropped_scores += max(len(self._scores) - MAX_PENDING_SCORES, 0)
            del self._scores[:-MAX_PENDING_SCORES]
            return 0
        if stored or self.storage.is_open("budgets"):  # after the commit: nothing to give back
            await self.storage.attempt("budgets", lambda: self._call(self.backlog.enforce_budgets))
        self._enqueued_log.append((time.monotonic(), self.backlog.enqueued_bytes - before))
        if stored:
            self._wake_drain.set()
        return stored

    def _tick(
        self,
        now_ms: int,
        immediate: list[Point],
        counts: list[tuple[str, int, str]],
        scores: list[AnomalyScore],
        model: tuple[str, str],
    ) -> int:
        if self._stale:
            self._restore(self.backlog.load_state())
            self._stale = False
        s = self._summariser
        if s is None:
            return 0
        if self._tail is None:
            self._open_tail()
        stored = 0
        if self._tail is not None:
            until_close = BACKFILL_CHUNK
            while rows := self._tail.readings_after(s.cursor, min(READ_CHUNK, until_close)):
                s.add_readings(rows)
                until_close -= len(rows)
                if until_close == 0:  # a backlog of journal history: close what it has passed
                    until_close = BACKFILL_CHUNK
                    closed = s.close(min(now_ms, rows[-1].ts_ms))
                    if closed is not None:
                        stored += self.backlog.enqueue(*closed)
        for score in scores:
            name, digest = model if score.source.value != "node" else (score.model_version, "")
            s.add_score(score.node_id, score.t_ms, score.score, source=score.source.value,
                        model=name or score.model_version, model_hash=digest)  # fmt: skip
        for node_id, at_ms, kind in counts:
            s.add_alert_event(node_id, at_ms, kind)
        points = list(immediate)
        state: dict[str, object] | None = None
        closed = s.close(now_ms, self._tail.stream_totals() if self._tail is not None else {})
        if closed is not None:
            points.extend(closed[0])
            state = closed[1]
            report = self._report(now_ms, s.late_total)
            if report is not None:
                points.append(report)
                state["reported"] = self._reported
        stored += self.backlog.enqueue(points, state, enforce=False) if points or state else 0
        self._durable_from = s.replay_from_id
        self._refresh()
        return stored

    def _report(self, now_ms: int, late: int) -> Point | None:
        """The forwarder's own loss report, when anything changed since the last one."""
        ev = self.backlog.evictions()
        totals = {
            "evicted_raw": ev["raw"],
            "downsampled_summaries": ev["downsampled_summaries"],
            "evicted_summaries": ev["summaries"],
            "evicted_events": ev["events"],
            "quarantined_points": self.backlog.stats().quarantined_points,
            "journal_late": self._reported.get("journal_late", 0) + late - self._late_seen,
        }
        changed = any(totals[k] != self._reported.get(k, 0) for k in totals)
        self._reported = totals
        self._late_seen = late
        if not changed:
            return None
        return point(FORWARD, {"site": self.site}, dict(totals), now_ms)

    def _refresh(self) -> None:
        self._oldest_enq_ms = self.backlog.oldest_enqueued_ms(self.dest)

    async def catch_up(self) -> int:
        """Summarise what the journal holds now; the lowest reading id it must keep."""
        if not self.ready.is_set():
            return 0
        await self.summarise_now()
        return self.keep_from_id()

    def keep_from_id(self) -> int:
        """The lowest journal reading id not yet summarised durably (retention keeps it)."""
        s = self._summariser
        return 0 if s is None else min(s.replay_from_id, self._durable_from)

    # -- draining -----------------------------------------------------------------------------

    async def _drain_loop(self) -> None:
        c = self.config
        async with Sender(c) as sender:
            self.sender = sender
            max_points = c.batch_max_points
            narrowing_through = 0  # ids up to here go in smaller batches (a refusal)
            backoff = c.retry_first_s
            next_send = 0.0
            last_send = 0.0
            loop = asyncio.get_running_loop()
            while True:
                batch = await self.storage.durably("read", functools.partial(self._call, functools.partial(
                    self.backlog.next_batch, self.dest, max_points, c.batch_max_bytes)))  # fmt: skip
                if batch is None:
                    self.idle.set()
                    self._wake_drain.clear()
                    await self._wake_drain.wait()
                    continue
                if batch.points < max_points and loop.time() - last_send < c.batch_max_age_s:
                    # A partial batch: wait for more (batching by age), unless it is old.
                    await self._release()
                    await asyncio.sleep(c.batch_max_age_s - (loop.time() - last_send))
                    last_send = 0.0
                    continue
                if c.drain_max_points_per_s > 0 and next_send > loop.time():
                    await asyncio.sleep(next_send - loop.time())
                self.idle.clear()
                body = batch.body()
                outcome = await sender.send(body)
                now = loop.time()
                last_send = now
                if c.drain_max_points_per_s > 0:
                    next_send = max(next_send, now) + batch.points / c.drain_max_points_per_s
                if outcome.verdict in _NARROW and batch.points > 1:
                    # Halve until what the store refuses stands alone, so a bad point costs
                    # only itself (a store that wrote the good lines of a refused batch, as
                    # InfluxDB does, overwrites them when they come again: same identity).
                    max_points = max(batch.points // 2, 1)
                    narrowing_through = max(narrowing_through, batch.last_id)
                    continue
                wait = await self._handle(batch, outcome, len(body))
                if wait is None:
                    backoff = c.retry_first_s
                    # Full batches again once the refused point is found or passed.
                    if outcome.verdict in _NARROW or batch.last_id >= narrowing_through:
                        max_points, narrowing_through = c.batch_max_points, 0
                    continue
                self.retries += 1
                if wait > 0:  # the store said when (Retry-After): its word, within an hour
                    delay = min(wait, MAX_RETRY_AFTER_S)
                else:
                    delay = random.uniform(backoff / 2, backoff)
                    backoff = min(backoff * 2, c.retry_max_s)
                await self._release()
                await asyncio.sleep(delay)

    async def _release(self) -> None:
        def release() -> None:
            self.backlog.inflight_through = 0

        await self._call(release)

    async def _handle(self, batch: Batch, outcome: Outcome, size: int) -> float | None:
        """Record ``outcome``; None to go on at once, else seconds to wait (0: backoff)."""
        v = outcome.verdict
        if v is Verdict.DELIVERED:
            # Held until the checkpoint is written (a full disk): no next batch meanwhile.
            await self.storage.durably(
                "checkpoint", lambda: self._call(lambda: self._delivered(batch))
            )
            self.delivered_points += batch.points
            self._delivered_log.append((time.monotonic(), batch.points, size))
            self._set_online(True, "")
            self._auth.accepted()
            return None
        if v in _NARROW:  # one point (or a batch the store refuses as a whole)
            await self.storage.durably("checkpoint", lambda: self._call(lambda: self.backlog.quarantine(
                self.dest, batch, outcome.status or 0, outcome.reason)))  # fmt: skip
            self.quarantined_batches += 1
            self._set_online(True, outcome.reason)
            return None
        self._set_online(False, outcome.reason)
        if v is Verdict.AUTH:
            self._auth.refused(self.config.url, outcome.status, outcome.reason)
            return 0.0
        _LOGGER.info("forward: %s; retrying", outcome.reason)
        if outcome.retry_after_s is not None:
            return max(outcome.retry_after_s, 0.001)
        return 0.0

    def _delivered(self, batch: Batch) -> None:
        self.backlog.delivered(self.dest, batch)
        self._refresh()

    def _set_online(self, online: bool, error: str) -> None:
        if online != self.online:
            _LOGGER.warning("forward: %s is %s%s", self.config.url, "reachable" if online else "unreachable",
                            f" ({error})" if error else "")  # fmt: skip
        self.online = online
        self.last_error = error

    # -- the operator alert (401/403) ---------------------------------------------------------

    @property
    def auth_alert(self) -> Alert | None:
        """The open operator alert while the store refuses the token."""
        return self._auth.current

    def _emit(self, event: AlertEvent) -> None:
        if self._alert_sink is not None:
            self._alert_sink(event)
        else:
            self.on_alert_event(event)

    # -- metrics ------------------------------------------------------------------------------

    def gauges(self) -> dict[str, Callable[[], float]]:
        return {
            "forward_backlog_points": lambda: float(sum(self.backlog.counts()[0].values())),
            "forward_backlog_bytes": lambda: float(sum(self.backlog.counts()[1].values())),
            "forward_oldest_undelivered_age_s": self.oldest_age_s,
            "forward_drain_points_per_s": lambda: self.rates()[0],
            "forward_time_to_full_s": self.time_to_full_s,
            "forward_delivered_points": lambda: float(self.delivered_points),
            "forward_quarantined_batches": lambda: float(self.quarantined_batches),
            "forward_online": lambda: 1.0 if self.online else 0.0,
            "forward_auth_failed": lambda: 1.0 if self.auth_alert is not None else 0.0,
            "forward_alerts_over_budget": lambda: float(self.backlog.alerts_over_budget),
            "forward_storage_fault": lambda: 0.0 if self.storage.fault is None else 1.0,
            "forward_dropped_events": lambda: float(self.dropped_events),
            "forward_dropped_scores": lambda: float(self.dropped_scores),
            **{
                f"forward_evicted_{kind}": functools.partial(self._evicted, kind)
                for kind in EVICTION_KINDS
            },
        }

    def _evicted(self, kind: str) -> float:
        return float(self.backlog.evictions()[kind])

    def oldest_age_s(self) -> float:
        oldest = self._oldest_enq_ms
        return 0.0 if oldest is None else max(_now_ms() - oldest, 0) / 1000.0

    def rates(self) -> tuple[float, float, float]:
        """(points/s delivered, bytes/s delivered, bytes/s enqueued) over the last minute."""
        now = time.monotonic()
        for log in (self._delivered_log, self._enqueued_log):
            while log and now - log[0][0] > _RATE_WINDOW_S:
                log.popleft()
        points = sum(p for _, p, _ in self._delivered_log)
        sent = sum(b for _, _, b in self._delivered_log)
        added = sum(b for _, b in self._enqueued_log)
        return points / _RATE_WINDOW_S, sent / _RATE_WINDOW_S, added / _RATE_WINDOW_S

    def time_to_full_s(self) -> float:
        """Seconds until the backlog reaches its total budget at the current net rate
        (-1: not filling)."""
        _, drained, added = self.rates()
        counts = self.backlog.counts()[1]
        used = sum(n for c, n in counts.items() if c is not PointClass.ALERT)
        net = added - drained
        if net <= 0:
            return -1.0
        return max(self.config.budgets.total_bytes - used, 0) / net
