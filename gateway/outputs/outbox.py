"""The durable outbox for notifications that need the internet (webhook, e-mail).

Events are committed to their own SQLite file (WAL, ``synchronous=FULL``) in the order
they were given, with one delivery row per destination that wants them. One delivery
task per destination sends that destination's rows strictly in order; a row is marked
delivered only after the destination confirmed it, and a delivered row is never sent
again. While a destination is unreachable its task retries the head row with backoff
(head-of-line: later events wait, so order holds); a restart resumes from the first
undelivered row. A destination that refuses an event for good (HTTP 4xx, SMTP 5xx)
gets it marked ``rejected``, logged and counted, and moves on.

Delivered-once: every notification carries the event id as its idempotency key
(``Idempotency-Key`` header, e-mail ``Message-ID``), so the one resend that can happen —
a crash between the receiver's confirmation and our commit — is recognisable. Enqueuing
an event id that is already in the outbox does nothing, so the alert journal may be
replayed into :meth:`Outbox.put` after a restart.

Budget (``outputs.outbox.max_bytes``): the bodies of undelivered events, queued or in the
file. Alerts (raised, escalated) are never dropped and never make room by dropping another
event: they are always taken, past the budget if need be. Their number is bounded upstream
(one open alert per rule and admitted node, and the node registry is capped). While the
budget is exceeded, every other kind (cleared, acknowledged, re-notified) is refused and
counted, and ``on_full(True)`` is called once (the ``outbox_full`` system alert); once the
undelivered bytes are back under 90 % of the budget, ``on_full(False)``.

Blocking SQLite work runs in worker threads (``asyncio.to_thread``), never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from gateway.errors import FieldgateError, StoreError
from gateway.events import AlertEvent, AlertEventKind
from gateway.log_limit import LimitedWarning
from gateway.retry import Backoff
from gateway.store.faults import is_storage_fault
from gateway.store.schema_version import open_schema

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")
# Never refused, however full the outbox: someone must hear of these.
ALERT_KINDS = frozenset({AlertEventKind.RAISED, AlertEventKind.ESCALATED})

# docs: gateway/store/schema_version.py; 1 = the tables below (0: the same, unnumbered).
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,                 -- enqueue order: delivery order
    event_id TEXT NOT NULL UNIQUE,          -- idempotency key
    enqueued_ms INTEGER NOT NULL,
    body BLOB NOT NULL                      -- the JSON sent (gateway.outputs.payload)
);
CREATE TABLE IF NOT EXISTS deliveries (
    destination TEXT NOT NULL,
    event_row INTEGER NOT NULL REFERENCES events(id),
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | delivered | rejected
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    done_ms INTEGER,
    PRIMARY KEY (destination, event_row)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_pending
    ON deliveries (destination, event_row) WHERE state = 'pending';
"""


class DeliveryRejected(FieldgateError):
    """The destination refused this notification for good; resending cannot help."""


class Destination(Protocol):
    """Where notifications go. ``send`` raises TransportError for a retryable failure
    (unreachable, timeout, 5xx) and DeliveryRejected for a permanent one."""

    @property
    def name(self) -> str: ...

    def wants(self, event: AlertEvent) -> bool: ...

    async def send(self, note: Notification) -> None: ...


@dataclass(frozen=True, slots=True)
class Notification:
    row: int
    event_id: str
    body: bytes
    attempts: int  # failed attempts so far


@dataclass(frozen=True, slots=True)
class Pending:
    """An event waiting for the outbox writer, with the destinations that want it."""

    event_id: str
    body: bytes
    destinations: tuple[str, ...]


class OutboxStore:
    """The synchronous SQLite side; thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: an event the outbox took survives power loss, not only a crash.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            open_schema(self._db, f"outbox {path}", SCHEMA, SCHEMA_VERSION)
        except sqlite3.Error as exc:
            raise StoreError(f"outbox {path}: {exc}; is the data directory writable?") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def enqueue(self, items: Sequence[Pending]) -> int:
        """Commit ``items`` in order in one transaction; returns how many were new."""
        now = int(time.time() * 1000)
        added = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for item in items:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO events (event_id, enqueued_ms, body) "
                        "VALUES (?, ?, ?)",
                        (item.event_id, now, item.body),
                    )
                    if cur.rowcount == 0:
                        continue  # seen before (replay): its deliveries already exist
                    added += 1
                    self._db.executemany(
                        "INSERT INTO deliveries (destination, event_row) VALUES (?, ?)",
                        [(dest, cur.lastrowid) for dest in item.destinations],
                    )
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (SQLITE_FULL does): keep the cause.
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
        return added

    def next_pending(self, destination: str) -> Notification | None:
        with self._lock:
            row = self._db.execute(
                "SELECT d.event_row, e.event_id, e.body, d.attempts "
                "FROM deliveries d JOIN events e ON e.id = d.event_row "
                "WHERE d.destination = ? AND d.state = 'pending' "
                "ORDER BY d.event_row LIMIT 1",
                (destination,),
            ).fetchone()
        if row is None:
            return None
        return Notification(row=row[0], event_id=row[1], body=bytes(row[2]), attempts=row[3])

    def mark_delivered(self, destination: str, row: int) -> int:
        return self._finish(destination, row, "delivered", None)

    def mark_rejected(self, destination: str, row: int, reason: str) -> int:
        return self._finish(destination, row, "rejected", reason)

    def _finish(self, destination: str, row: int, state: str, reason: str | None) -> int:
        """Close one delivery; the event's body size when no destination waits for it any more."""
        with self._lock:
            self._db.execute(
                "UPDATE deliveries SET state = ?, done_ms = ?, last_error = ? "
                "WHERE destination = ? AND event_row = ? AND state = 'pending'",
                (state, int(time.time() * 1000), reason, destination, row),
            )
            (waiting,) = self._db.execute(
                "SELECT count(*) FROM deliveries WHERE event_row = ? AND state = 'pending'",
                (row,),
            ).fetchone()
            if waiting:
                return 0
            found = self._db.execute(
                "SELECT length(body) FROM events WHERE id = ?", (row,)
            ).fetchone()
        return int(found[0]) if found else 0

    def pending_bytes(self) -> int:
        """Bytes of the bodies of events some destination still waits for."""
        with self._lock:
            (total,) = self._db.execute(
                "SELECT coalesce(sum(length(body)), 0) FROM events WHERE id IN "
                "(SELECT event_row FROM deliveries WHERE state = 'pending')"
            ).fetchone()
        return int(total)

    def record_failure(self, destination: str, row: int, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ? "
                "WHERE destination = ? AND event_row = ?",
                (error[:500], destination, row),
            )

    def counts(self) -> dict[str, dict[str, int]]:
        """``{destination: {state: n}}``."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            rows = self._db.execute(
                "SELECT destination, state, count(*) FROM deliveries GROUP BY destination, state"
            ).fetchall()
        for dest, state, n in rows:
            out.setdefault(dest, {})[state] = n
        return out

    def delivered_event_ids(self, destination: str) -> list[str]:
        """Delivered event ids in delivery order (for tests and the dashboard)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT e.event_id FROM deliveries d JOIN events e ON e.id = d.event_row "
                "WHERE d.destination = ? AND d.state = 'delivered' ORDER BY d.event_row",
                (destination,),
            ).fetchall()
        return [r[0] for r in rows]


class Outbox:
    """Takes events without blocking, commits them, and runs one delivery task per
    destination. Create it, call :meth:`put` any time, ``await run()`` in a TaskGroup."""

    def __init__(
        self,
        path: Path,
        destinations: Sequence[Destination],
        *,
        retry_first_s: float = 1.0,
        retry_max_s: float = 60.0,
        queue_max_events: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        on_full: Callable[[bool], None] | None = None,
        on_fault: Callable[[str | None], None] | None = None,
    ) -> None:
        self.path = path
        # A full disk or an I/O error: events wait in memory (put's bounds hold), deliveries
        # pause, the store is tried again with backoff; on_fault(cause), then on_fault(None).
        self._on_fault = on_fault
        self.fault: str | None = None
        self.max_bytes = max_bytes
        self._on_full = on_full
        self.full = False
        # Bodies of undelivered events: queued here or pending in the file (loaded at run()).
        self.pending_bytes = 0
        self.refused = 0  # non-alert events refused while over budget
        self._refused_log = LimitedWarning(_LOGGER)
        self._destinations = list(destinations)
        self._retry_first_s = retry_first_s
        self._retry_max_s = retry_max_s
        self._incoming: deque[Pending] = deque()
        self._queue_max = queue_max_events
        self._incoming_ready = asyncio.Event()
        self._wake = {d.name: asyncio.Event() for d in self._destinations}
        self._store: OutboxStore | None = None
        self.ready = asyncio.Event()
        self.dropped = 0  # put() while the writer was this far behind; logged as errors
        self.delivered: dict[str, int] = dict.fromkeys(self._wake, 0)
        self.rejected: dict[str, int] = dict.fromkeys(self._wake, 0)
        self.failures: dict[str, int] = dict.fromkeys(self._wake, 0)
        self.online: dict[str, bool] = dict.fromkeys(self._wake, True)

    @property
    def store(self) -> OutboxStore:
        if self._store is None:
            raise StoreError("the outbox is not running")
        return self._store

    def put(self, event: AlertEvent, body: bytes) -> bool:
        """Hand an event to the outbox (never blocks). False when no destination wants it,
        or, for kinds other than raised/escalated alerts (always taken), when the outbox is
        over ``max_bytes`` (refused) or the writer is ``queue_max_events`` behind (dropped)."""
        wanted = tuple(d.name for d in self._destinations if d.wants(event))
        if not wanted:
            return False
        alert = event.kind in ALERT_KINDS
        if not alert and self.pending_bytes + len(body) > self.max_bytes:
            self.refused += 1
            self._refused_log.warning(
                "outbox: %s: refused, %d bytes undelivered (outputs.outbox.max_bytes = %d); "
                "alerts are still taken",
                event.event_id,
                self.pending_bytes,
                self.max_bytes,
            )
            self._set_full(True)
            return False
        if not alert and len(self._incoming) >= self._queue_max:
            # Only reachable when SQLite stalls for a long time; the alert itself is in
            # the alert journal, so a replay after restart can still deliver it.
            self.dropped += 1
            _LOGGER.error(
                "outbox: %s: writer %d events behind; notification dropped",
                event.event_id,
                len(self._incoming),
            )
            return False
        self._incoming.append(Pending(event.event_id, body, wanted))
        self.pending_bytes += len(body)
        self._incoming_ready.set()
        if self.pending_bytes > self.max_bytes:
            self._set_full(True)
        return True

    def _set_full(self, full: bool) -> None:
        if full == self.full:
            return
        self.full = full
        if full:
            _LOGGER.error(
                "outbox: over its budget (%d bytes undelivered, outputs.outbox.max_bytes = %d): "
                "only raised and escalated alerts are taken until deliveries catch up",
                self.pending_bytes,
                self.max_bytes,
            )
        else:
            _LOGGER.info("outbox: back under its budget (%d bytes undelivered)", self.pending_bytes)
        if self._on_full is not None:
            self._on_full(full)

    async def _durably(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a thread, retried with backoff while the disk refuses writes."""
        backoff = Backoff(first_s=self._retry_first_s, max_s=self._retry_max_s)
        while True:
            try:
                result = await asyncio.to_thread(fn, *args)
            except sqlite3.Error as exc:
                if not is_storage_fault(exc):
                    raise
                if self.fault is None:
                    self.fault = str(exc)
                    _LOGGER.error(
                        "outbox %s cannot write (%s): notifications wait in memory and "
                        "deliveries pause until the disk has room",
                        self.path,
                        exc,
                    )
                    if self._on_fault is not None:
                        self._on_fault(self.fault)
                await asyncio.sleep(backoff.next_delay())
                continue
            if self.fault is not None:
                self.fault = None
                _LOGGER.warning("outbox %s writable again", self.path)
                if self._on_fault is not None:
                    self._on_fault(None)
            return result

    def _freed(self, size: int) -> None:
        self.pending_bytes = max(0, self.pending_bytes - size)
        if self.full and self.pending_bytes < self.max_bytes * 0.9:
            self._set_full(False)

    async def run(self) -> None:
        self._store = await asyncio.to_thread(OutboxStore, self.path)
        stored = await asyncio.to_thread(self._store.pending_bytes)
        self.pending_bytes += stored
        if self.pending_bytes > self.max_bytes:
            self._set_full(True)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._write(), name=f"outbox:writer:{self.path.name}")
                for dest in self._destinations:
                    tg.create_task(self._deliver(dest), name=f"outbox:deliver:{dest.name}")
                self.ready.set()
        finally:
            self.ready.clear()
            store, self._store = self._store, None
            store.close()

    async def _write(self) -> None:
        store = self.store
        try:
            while True:
                await self._incoming_ready.wait()
                self._incoming_ready.clear()
                batch = list(self._incoming)
                if not batch:
                    continue
                # Leave the batch in _incoming until committed: if shutdown cancels us
                # mid-commit, the handler below commits it again (INSERT OR IGNORE).
                added = await self._durably(store.enqueue, batch)
                for _ in batch:
                    self._incoming.popleft()
                if added < len(batch):
                    # Replays of events already in the file were counted twice: count again.
                    stored = await asyncio.to_thread(store.pending_bytes)
                    self.pending_bytes = stored + sum(len(p.body) for p in self._incoming)
                    self._freed(0)
                for item in batch:
                    for name in item.destinations:
                        self._wake[name].set()
        except asyncio.CancelledError:
            # Shutdown: what put() accepted must be durable before we go (one short
            # blocking commit on the way out is cheaper than a lost alert).
            if self._incoming:
                try:
                    store.enqueue(list(self._incoming))
                except sqlite3.Error as exc:
                    if not is_storage_fault(exc):
                        raise
                    _LOGGER.error(
                        "outbox %s: %d notification(s) not written at shutdown (%s)",
                        self.path,
                        len(self._incoming),
                        exc,
                    )
                self._incoming.clear()
            raise

    async def _deliver(self, dest: Destination) -> None:
        store = self.store
        wake = self._wake[dest.name]
        backoff = Backoff(first_s=self._retry_first_s, max_s=self._retry_max_s)
        while True:
            wake.clear()
            note = await asyncio.to_thread(store.next_pending, dest.name)
            if note is None:
                await wake.wait()
                continue
            try:
                await dest.send(note)
            except DeliveryRejected as exc:
                self.rejected[dest.name] += 1
                _LOGGER.error(
                    "outbox: %s: %s refused it for good (%s); moving on",
                    note.event_id,
                    dest.name,
                    exc,
                )
                freed = await asyncio.to_thread(store.mark_rejected, dest.name, note.row, str(exc))
                self._freed(freed)
                continue
            except FieldgateError as exc:  # TransportError and friends: retry
                self.failures[dest.name] += 1
                delay = backoff.next_delay()
                if self.online[dest.name]:
                    _LOGGER.warning(
                        "outbox: %s: %s unreachable (%s); queueing, retrying in %.1f s",
                        note.event_id,
                        dest.name,
                        exc,
                        delay,
                    )
                self.online[dest.name] = False
                await self._durably(store.record_failure, dest.name, note.row, str(exc))
                await asyncio.sleep(delay)
                continue
            # Retried until written: a delivered row is never sent again.
            self._freed(await self._durably(store.mark_delivered, dest.name, note.row))
            self.delivered[dest.name] += 1
            if not self.online[dest.name]:
                _LOGGER.info("outbox: %s reachable again", dest.name)
            self.online[dest.name] = True
            backoff.reset()
