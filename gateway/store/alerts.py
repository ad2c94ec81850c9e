"""Durable alert history: every alert and every alert event, in SQLite, never evicted.

Its own file next to the journal (``alerts.db`` beside ``journal.db``, see
:func:`alerts_path_for`) rather than tables in the journal, for two reasons:

* the journal's raw budget measures the journal *file* (``Journal.enforce_budget``); alert
  tables inside it would count against the raw budget and make it evict readings sooner,
  and the budget could never be met by evicting what it is allowed to evict;
* the journal's writer thread holds the write lock for each group commit (one fsync each at
  several thousand readings a second); alert writes in the same file would wait behind
  ingest, while in their own file an alert is durable within one fsync of its own.

WAL mode with a busy timeout, so the dashboard can read through its own :class:`AlertStore`
while the engine writes. Events are written before the engine returns them (write-ahead):
an event anyone has seen survives a ``kill -9``. ``seq`` orders events as the engine made them,
so outputs that were offline can forward them later in order (:meth:`AlertStore.events_after`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.alerts.state import OpenAlert
from gateway.errors import StoreError
from gateway.events import Alert, AlertEvent, AlertEventKind, AlertState, Severity
from gateway.store.faults import is_storage_fault
from gateway.store.schema_version import open_schema

_LOGGER = logging.getLogger(__name__)

# docs: gateway/store/schema_version.py; 1 = the tables below (0: the same, unnumbered).
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,              -- "<rule>:<node>:<number>"
    key TEXT NOT NULL,
    number INTEGER NOT NULL,
    rule TEXT NOT NULL,
    node_id TEXT NOT NULL,
    severity INTEGER NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL,
    value REAL,
    raised_at_ms INTEGER NOT NULL,
    acked_at_ms INTEGER,
    acked_by TEXT,
    ack_comment TEXT,
    cleared_at_ms INTEGER,
    escalations INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts (state);
CREATE INDEX IF NOT EXISTS alerts_by_key ON alerts (key, number);
CREATE TABLE IF NOT EXISTS alert_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order the engine made them
    event_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    alert_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    alert TEXT NOT NULL                     -- JSON snapshot of the Alert after the event
);
CREATE INDEX IF NOT EXISTS alert_events_by_alert ON alert_events (alert_id);
CREATE INDEX IF NOT EXISTS alert_events_by_time ON alert_events (at_ms);
"""

_ALERT_COLUMNS = (
    "alert_id, key, rule, node_id, severity, state, message, value, raised_at_ms,"
    " acked_at_ms, acked_by, ack_comment, cleared_at_ms, escalations"
)


def alerts_path_for(journal_path: Path) -> Path:
    """Where the alert history lives for a journal at ``journal_path``."""
    return journal_path.with_name("alerts.db")


def _alert_from_row(row: Sequence[Any]) -> Alert:
    return Alert(
        alert_id=str(row[0]),
        key=str(row[1]),
        rule=str(row[2]),
        node_id=str(row[3]),
        severity=Severity(row[4]),
        state=AlertState(row[5]),
        message=str(row[6]),
        value=row[7],
        raised_at_ms=row[8],
        acked_at_ms=row[9],
        acked_by=row[10],
        ack_comment=row[11],
        cleared_at_ms=row[12],
        escalations=row[13],
    )


def _alert_json(alert: Alert) -> str:
    return json.dumps(
        [
            alert.alert_id, alert.key, alert.rule, alert.node_id, int(alert.severity),
            alert.state.value, alert.message, alert.value, alert.raised_at_ms, alert.acked_at_ms,
            alert.acked_by, alert.ack_comment, alert.cleared_at_ms, alert.escalations,
        ]
    )  # fmt: skip


def _event_from_row(row: Sequence[Any]) -> AlertEvent:
    event_id, kind, at_ms, alert = row
    return AlertEvent(
        str(event_id),
        AlertEventKind(kind),
        int(at_ms),
        _alert_from_row(json.loads(str(alert))),
    )


# Events held in memory while the disk refuses writes; past this the oldest are given up
# (history only: every one of them was already handed to the outputs), and counted.
MAX_UNWRITTEN = 10_000


class AlertStore:
    """Alerts and alert events in their own SQLite file. One writer (the engine); any number
    of readers with their own ``AlertStore`` on the same path.

    A full disk or an I/O error does not stop alerting: :meth:`record` keeps the events in
    memory (bounded by ``MAX_UNWRITTEN``), logs once, calls ``on_fault(cause)`` and returns, so
    the engine hands them to the outputs as usual; the next :meth:`record` or :meth:`flush`
    writes them first, in order, and ``on_fault(None)`` says the history is whole again.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: str = "FULL",
        on_fault: Callable[[str | None], None] | None = None,
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        self._on_fault = on_fault
        self._unwritten: list[AlertEvent] = []
        self.fault: str | None = None
        self.unwritten_dropped = 0

    def open(self) -> AlertStore:
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            open_schema(db, f"alert store {self.path}", SCHEMA, SCHEMA_VERSION)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open alert store {self.path}: {exc}") from exc
        self._db = db
        return self

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> AlertStore:
        return self.open() if self._db is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("alert store is not open")
        return self._db

    # -- writes ------------------------------------------------------------------------------

    def record(self, events: Sequence[AlertEvent]) -> None:
        """Append ``events`` and update their alerts, in one transaction.

        Idempotent per ``event_id``: recording an event twice stores it once. On a disk
        fault the events are held and written later (see the class).
        """
        if not events and not self._unwritten:
            return
        batch = [*self._unwritten, *events]
        try:
            self._write(batch)
        except StoreError as exc:
            if not is_storage_fault(exc.__cause__ or exc):
                raise
            self._hold(events, str(exc.__cause__))
            return
        if self._unwritten:
            _LOGGER.warning(
                "alert store %s writable again: %d held event(s) written",
                self.path,
                len(self._unwritten),
            )
            self._unwritten.clear()
        if self.fault is not None:
            self.fault = None
            if self._on_fault is not None:
                self._on_fault(None)

    def flush(self) -> None:
        """Try again to write what a disk fault held back (the runner calls it each tick)."""
        self.record([])

    def _hold(self, events: Sequence[AlertEvent], cause: str) -> None:
        self._unwritten.extend(events)
        excess = len(self._unwritten) - MAX_UNWRITTEN
        if excess > 0:
            del self._unwritten[:excess]
            self.unwritten_dropped += excess
        if self.fault is None:
            self.fault = cause
            _LOGGER.error(
                "alert store %s cannot write (%s): alerts still go to the outputs; their "
                "history is held in memory (up to %d events) and written when the disk has room",
                self.path,
                cause,
                MAX_UNWRITTEN,
            )
            if self._on_fault is not None:
                self._on_fault(cause)

    def _write(self, events: Sequence[AlertEvent]) -> None:
        db = self._require()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for ev in events:
                    a = ev.alert
                    number = int(a.alert_id.rsplit(":", 1)[1])
                    db.execute(
                        f"INSERT INTO alerts ({_ALERT_COLUMNS}, number)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT(alert_id) DO UPDATE SET severity=excluded.severity,"
                        " state=excluded.state, message=excluded.message, value=excluded.value,"
                        " acked_at_ms=excluded.acked_at_ms, acked_by=excluded.acked_by,"
                        " ack_comment=excluded.ack_comment, cleared_at_ms=excluded.cleared_at_ms,"
                        " escalations=excluded.escalations",
                        (a.alert_id, a.key, a.rule, a.node_id, int(a.severity), a.state.value,
                         a.message, a.value, a.raised_at_ms, a.acked_at_ms, a.acked_by,
                         a.ack_comment, a.cleared_at_ms, a.escalations, number),
                    )  # fmt: skip
                    db.execute(
                        "INSERT OR IGNORE INTO alert_events"
                        " (event_id, kind, at_ms, alert_id, node_id, rule, alert)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (ev.event_id, ev.kind.value, ev.at_ms, a.alert_id, a.node_id, a.rule,
                         _alert_json(a)),
                    )  # fmt: skip
                db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (SQLITE_FULL does): a failing ROLLBACK
                # must not hide the cause.
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot record alert events in {self.path}: {exc}") from exc

    # -- reads -------------------------------------------------------------------------------

    def get(self, alert_id: str) -> Alert | None:
        row = (
            self._require()
            .execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE alert_id=?", (alert_id,))
            .fetchone()
        )
        return _alert_from_row(row) if row else None

    def alerts(
        self,
        *,
        state: AlertState | None = None,
        node_id: str | None = None,
        rule: str | None = None,
        limit: int = 1000,
    ) -> list[Alert]:
        """Alerts, newest raised first."""
        where, args = _filters(state=state, node_id=node_id, rule=rule)
        rows = self._require().execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts{where}"
            " ORDER BY raised_at_ms DESC, alert_id DESC LIMIT ?",
            (*args, limit),
        )
        return [_alert_from_row(r) for r in rows]

    def history(
        self,
        *,
        node_id: str | None = None,
        rule: str | None = None,
        alert_id: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 1000,
    ) -> list[AlertEvent]:
        """Events in the order they were made (oldest first), the last ``limit`` that match."""
        where, args = _filters(node_id=node_id, rule=rule, alert_id=alert_id)
        if since_ms is not None:
            where += (" AND" if where else " WHERE") + " at_ms >= ?"
            args.append(since_ms)
        if until_ms is not None:
            where += (" AND" if where else " WHERE") + " at_ms < ?"
            args.append(until_ms)
        rows = self._require().execute(
            "SELECT event_id, kind, at_ms, alert FROM (SELECT seq, event_id, kind, at_ms, alert"
            f" FROM alert_events{where} ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (*args, limit),
        )
        return [_event_from_row(r) for r in rows]

    def events_after(self, seq: int, limit: int = 1000) -> list[tuple[int, AlertEvent]]:
        """``(seq, event)`` with ``seq`` greater than the given one, in order: a cursor for
        consumers that forward events later (resume from the last seq they delivered)."""
        rows = self._require().execute(
            "SELECT seq, event_id, kind, at_ms, alert FROM alert_events WHERE seq > ?"
            " ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [(int(r[0]), _event_from_row(r[1:])) for r in rows]

    def count_events(self) -> int:
        (n,) = self._require().execute("SELECT count(*) FROM alert_events").fetchone()
        return int(n)

    # -- for the engine's restart ------------------------------------------------------------

    def load_open(self) -> list[OpenAlert]:
        """Open alerts with their timers, as the engine needs them after a restart."""
        db = self._require()
        rows = db.execute(
            f"SELECT {_ALERT_COLUMNS}, number FROM alerts WHERE state != ? ORDER BY raised_at_ms",
            (AlertState.CLEARED.value,),
        ).fetchall()
        out = []
        for row in rows:
            alert = _alert_from_row(row)
            renotified, notified, escalated = db.execute(
                "SELECT count(CASE WHEN kind='renotified' THEN 1 END),"
                " max(CASE WHEN kind IN ('raised','renotified','escalated') THEN at_ms END),"
                " max(CASE WHEN kind IN ('raised','escalated') THEN at_ms END)"
                " FROM alert_events WHERE alert_id=?",
                (alert.alert_id,),
            ).fetchone()
            raised = alert.raised_at_ms
            out.append(
                OpenAlert(alert, row[14], renotified, notified or raised, escalated or raised)
            )
        return out

    def numbers(self) -> dict[str, int]:
        """The highest alert number used per key, so new alert ids never repeat old ones."""
        rows = self._require().execute("SELECT key, max(number) FROM alerts GROUP BY key")
        return {k: int(n) for k, n in rows}


def _filters(**conds: object) -> tuple[str, list[object]]:
    parts, args = [], []
    for column, value in conds.items():
        if value is not None:
            parts.append(f"{column} = ?")
            args.append(value.value if isinstance(value, AlertState) else value)
    return (" WHERE " + " AND ".join(parts) if parts else ""), args
