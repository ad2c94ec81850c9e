"""The journal writer: group commits off the event loop, then acknowledgements.

Order is the whole point (invariant "Acknowledged means durable"): envelopes are committed in one
transaction on the journal's own thread; only after ``COMMIT`` returns are acks sent
back to the nodes and MQTT messages PUBACKed to the broker.

A disk that refuses writes (full, I/O error) does not stop the gateway: the writer keeps the
batch, acknowledges nothing, and retries with backoff. The ingest queue fills behind it, so
the sources stop reading (backpressure) and the data waits where it is safe, on the nodes
and at the broker. Fault listeners hear about the fault once and about the recovery once
(the gateway raises a local alert on paths that need no disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from gateway.config import JournalConfig
from gateway.errors import StorageFault
from gateway.ingest import Envelope, IngestQueue
from gateway.metrics import Metrics
from gateway.store.journal import CommitResult, Journal

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

CommitListener = Callable[[CommitResult], None]
# Called with the fault's description when commits start failing, with None once they work.
FaultListener = Callable[[str | None], None]
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 30.0


def hold_until(
    arrived: float, last_start: float, interval: float, *, from_arrival: bool = False
) -> float:
    """When to start the commit of what has waited since ``arrived`` (monotonic seconds).

    Two commits start at least ``interval`` apart (unless a backlog is left over from a full
    commit); a message that comes ``interval`` or more after the previous commit started (a
    trickle, a quiet link) is committed at once. One that comes sooner waits until the
    interval since that start is over, or with ``from_arrival`` (``journal.group_from_arrival``)
    until ``interval`` after its own arrival: then each commit of a steady flow gathers a whole
    interval's arrivals, not only those that came in the part of the interval left after the
    previous commit drained the queue. Either way no message waits more than ``interval``
    for others.
    """
    if arrived >= last_start + interval:
        return arrived
    return arrived + interval if from_arrival else last_start + interval


class JournalWriter:
    def __init__(
        self, journal: Journal, queue: IngestQueue, config: JournalConfig, metrics: Metrics
    ) -> None:
        self._journal = journal
        self._queue = queue
        self._config = config
        self._metrics = metrics
        self._listeners: list[CommitListener] = []
        self._fault_listeners: list[FaultListener] = []
        self.fault: str | None = None  # what the disk said, while commits fail
        self.faults = 0  # storage-fault episodes since start
        # One thread: SQLite connections belong to a thread, and one writer is all WAL allows.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self.ready = asyncio.Event()
        # Taken from the queue, held for min_commit_interval_s before its commit (hold_until).
        self._held: list[Envelope] = []
        self._last_rows = 0  # rows the previous commit stored (journal.group_below_rows)
        self._last_trickle = False  # it held only one-reading messages, two or more
        # The commit running on the journal thread: its future, or one the writer waits on
        # after being cancelled mid-commit.
        self._in_flight: asyncio.Future[None] | None = None

    def add_listener(self, listener: CommitListener) -> None:
        """Call ``listener`` on the event loop after every commit (must not block)."""
        self._listeners.append(listener)

    def add_fault_listener(self, listener: FaultListener) -> None:
        self._fault_listeners.append(listener)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the journal thread, after any commit in progress."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def run(self) -> None:
        try:
            await self.call(self._journal.open)
            self.ready.set()
            _LOGGER.info("journal open: %s", self._journal.path)
            limit = self._config.max_commit_messages
            interval = self._config.min_commit_interval_s
            from_arrival = self._config.group_from_arrival
            trickle_interval = max(interval, self._config.trickle_commit_interval_s)
            hold_below = self._config.group_below_rows
            started = -math.inf
            while True:
                batch = await self._queue.get_batch(limit)
                if len(batch) < limit and self._last_rows < hold_below:
                    until = hold_until(
                        self._queue.since,
                        started,
                        trickle_interval if self._last_trickle else interval,
                        from_arrival=from_arrival,
                    )
                    wait = until - time.monotonic()
                    if wait > 0:
                        # Group commit: what arrives until then shares this commit. Held
                        # here, the batch is still committed if we are cancelled.
                        self._held = batch
                        await self._queue.hold(wait, batch)  # shorter for an urgent reading
                        self._held = []
                        batch += self._queue.drain_nowait(limit - len(batch))
                started = time.monotonic()
                await self._commit(batch)
        finally:
            await self._shutdown()

    async def _commit(self, batch: list[Envelope]) -> None:
        delay = _RETRY_FIRST_S
        while True:
            done = self._submit_commit(batch)
            try:
                await done
            except asyncio.CancelledError:
                # The transaction is already running on the journal thread: let it finish
                # (what it made durable is still acknowledged, by _settle), then go on
                # shutting down.
                if self._in_flight is not None:
                    waiter = self._in_flight = asyncio.get_running_loop().create_future()
                    with contextlib.suppress(StorageFault):  # never acknowledged: resent
                        await waiter
                raise
            except StorageFault as exc:
                self._degraded(str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            return

    def _submit_commit(self, batch: list[Envelope]) -> asyncio.Future[None]:
        """Commit ``batch`` on the journal thread; the future is done once its acks are out.

        Not ``run_in_executor``: the journal thread itself schedules :meth:`_settle`, which
        acknowledges in the loop iteration that learns of the commit. At a site's trickle
        (a commit every few ms) each hop saved is a loop iteration saved per commit.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._in_flight = done

        def on_journal_thread(committed: Future[CommitResult]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(self._settle, committed)

        self._executor.submit(self._journal.commit, batch).add_done_callback(on_journal_thread)
        return done

    def _settle(self, committed: Future[CommitResult]) -> None:
        """On the loop, once the journal thread is through with a commit: acknowledge what
        it made durable, then wake the writer (with the commit's error, if any) through
        ``_in_flight``: the commit's future, or the one the writer waits on once cancelled."""
        waiter, self._in_flight = self._in_flight, None
        try:
            result = committed.result()
            if self.fault is not None:
                _LOGGER.warning("journal writable again after: %s", self.fault)
                self.fault = None
                for listener in self._fault_listeners:
                    listener(None)
            self._after_commit(result)
        except Exception as exc:  # StorageFault: the writer retries; anything else is raised
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
            return
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _degraded(self, fault: str) -> None:
        if self.fault is not None:
            return
        self.fault = fault
        self.faults += 1
        _LOGGER.error(
            "journal cannot commit: %s; nothing is acknowledged until it can (nodes and the "
            "broker keep the data); retrying",
            fault,
        )
        for listener in self._fault_listeners:
            listener(fault)

    def _after_commit(self, result: CommitResult) -> None:
        for env, ack in result.acks:
            if env.link is not None:
                env.link.send_ack(ack)
        for env in result.envelopes:
            if env.on_durable is not None:
                env.on_durable()
        self._metrics.record_commit(result)
        self._last_rows = sum(result.inserted.values())
        # Messages of one reading each from several nodes (journal.trickle_commit_interval_s).
        messages = len(result.envelopes)
        self._last_trickle = messages >= 2 and self._last_rows <= messages
        for listener in self._listeners:
            listener(result)

    async def _shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            # Commit what the sources already handed over; it costs one transaction and
            # saves the nodes a resend after restart.
            rest = self._held + self._queue.drain_nowait(self._queue.maxsize)
            self._held = []
            if rest and self.ready.is_set():
                try:
                    result = await loop.run_in_executor(self._executor, self._journal.commit, rest)
                except StorageFault as exc:
                    # Never acknowledged, so the nodes and the broker still hold it.
                    _LOGGER.warning("%d message(s) not committed at shutdown: %s", len(rest), exc)
                else:
                    self._after_commit(result)
        finally:
            await loop.run_in_executor(self._executor, self._journal.close)
            self._executor.shutdown(wait=True)
            _LOGGER.info("journal closed")

    async def run_retention(
        self,
        raw_budget_bytes: int,
        *,
        before_evict: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        """Keep the journal file within its byte budget, evicting raw readings first.

        ``before_evict`` (the forwarder's catch-up) runs first and returns the lowest
        reading id that must stay: nothing it has not summarised durably is evicted.
        """
        await self.ready.wait()
        while True:
            keep = await before_evict() if before_evict is not None else None
            evicted = await self.call(
                functools.partial(self._journal.enforce_budget, raw_budget_bytes, keep_from_id=keep)
            )
            self._metrics.evicted += evicted
            await asyncio.sleep(self._config.retention_interval_s)
