"""The durable backlog: points waiting for the store, in SQLite beside the journal.

One file (``<data_dir>/forward.db``), owned by one thread (the forwarder's executor), WAL.
``points.id`` is AUTOINCREMENT, so ids only ever grow: a destination's checkpoint ("every
id up to N is confirmed") stays true even when the table empties. A batch is read after
the checkpoint, and only a 2xx advances it (``delivered``); a crash before that resends
the batch, which the store overwrites (deterministic identities). ``synchronous=NORMAL``:
a power cut may roll back the last checkpoint (a resend, harmless) or the last enqueue
together with the summariser state stored beside it (it summarises again from the journal).

Budgets and the eviction ladder (invariant 5: loss is explicit) are in
:meth:`Backlog.enforce_budgets`; every evicted point is counted in ``evictions``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from gateway.errors import StoreError
from gateway.forward.config import ForwardBudgets
from gateway.forward.ladder import EVICTION_KINDS, EvictionLadder, _doc
from gateway.forward.points import Point, PointClass, encode
from gateway.forward.storage import rollback
from gateway.store.schema_version import open_schema

_LOGGER = logging.getLogger(__name__)

# docs: gateway/store/schema_version.py; 1 = the tables below (0: the same, unnumbered).
SCHEMA_VERSION: Final = 1
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- enqueue order; never reused (checkpoints)
    cls INTEGER NOT NULL,                  -- PointClass
    ts_ms INTEGER NOT NULL,                -- the point's own (source) timestamp
    enq_ms INTEGER NOT NULL,
    level INTEGER NOT NULL DEFAULT 0,      -- 1: a downsampled summary
    line BLOB NOT NULL,                    -- line protocol, ready to send
    doc TEXT                               -- summaries only: the point, for downsampling
);
CREATE INDEX IF NOT EXISTS points_cls ON points (cls, ts_ms);
CREATE TABLE IF NOT EXISTS checkpoints (
    dest TEXT PRIMARY KEY,
    through_id INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evictions (kind TEXT PRIMARY KEY, count INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    dest TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    points INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Batch:
    first_id: int
    last_id: int
    lines: list[bytes]

    @property
    def points(self) -> int:
        return len(self.lines)

    def body(self) -> bytes:
        return b"\n".join(self.lines) + b"\n"


@dataclass
class BacklogStats:
    points: dict[str, int] = field(default_factory=dict)  # per class name
    bytes: dict[str, int] = field(default_factory=dict)
    oldest_enqueued_ms: int | None = None
    evictions: dict[str, int] = field(default_factory=dict)
    quarantined_batches: int = 0
    quarantined_points: int = 0
    checkpoints: dict[str, int] = field(default_factory=dict)

    @property
    def total_points(self) -> int:
        return sum(self.points.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


class Backlog(EvictionLadder):
    """Not thread-safe: one thread (the forwarder's executor, or the CLI) calls it."""

    def __init__(
        self,
        path: Path,
        budgets: ForwardBudgets | None = None,
        *,
        precision: str = "ms",
        downsample_factor: int = 10,
    ) -> None:
        self.path = path
        self.budgets = budgets or ForwardBudgets()
        self.precision = precision
        self.downsample_factor = downsample_factor
        self._db: sqlite3.Connection | None = None
        self._count = dict.fromkeys(PointClass, 0)
        self._bytes = dict.fromkeys(PointClass, 0)
        self.inflight_through = 0  # ids up to here are being sent: never evicted under it
        self.alerts_over_budget = False
        self.enqueued_bytes = 0  # over this process's life, for the fill rate
        self._evicted = dict.fromkeys(EVICTION_KINDS, 0)

    # -- lifecycle --------------------------------------------------------------------------

    def open(self) -> Backlog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")  # the CLI may share the file
            open_schema(db, f"forward backlog {self.path}", SCHEMA, SCHEMA_VERSION)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open forward backlog {self.path}: {exc}") from exc
        self._db = db
        self._recount()
        return self

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("forward backlog is not open")
        return self._db

    def _recount(self) -> None:
        done = dict(self._require().execute("SELECT kind, count FROM evictions").fetchall())
        self._evicted = {k: int(done.get(k, 0)) for k in EVICTION_KINDS}
        self._count = dict.fromkeys(PointClass, 0)
        self._bytes = dict.fromkeys(PointClass, 0)
        rows = self._require().execute(
            "SELECT cls, count(*), coalesce(sum(length(line) + coalesce(length(doc), 0)), 0)"
            " FROM points GROUP BY cls"
        )
        for cls, n, size in rows:
            self._count[PointClass(cls)] = n
            self._bytes[PointClass(cls)] = size

    # -- state of the summariser, kept in the same transactions as its points ----------------

    def load_state(self) -> dict[str, object]:
        rows = self._require().execute("SELECT key, value FROM state")
        return {k: json.loads(v) for k, v in rows}

    # -- enqueue ----------------------------------------------------------------------------

    def enqueue(
        self,
        points: Iterable[Point],
        state: dict[str, object] | None = None,
        *,
        level: int = 0,
        enforce: bool = True,
    ) -> int:
        """Append ``points`` (and the summariser ``state``) in one transaction; enforce budgets
        (``enforce=False``: the caller does, after, to tell a failed commit from a failed
        eviction)."""
        db = self._require()
        now = _now_ms()
        rows = list(self._rows(points, now, level))
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO points (cls, ts_ms, enq_ms, level, line, doc) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            if state:
                db.executemany(
                    "INSERT OR REPLACE INTO state VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in state.items()],
                )
            db.execute("COMMIT")
        except BaseException:
            rollback(db)  # never "cannot rollback" over the cause (SQLITE_FULL)
            raise
        for cls, _, _, _, line, doc in rows:
            self._count[PointClass(cls)] += 1
            self._bytes[PointClass(cls)] += len(line) + (len(doc) if doc else 0)
            self.enqueued_bytes += len(line) + (len(doc) if doc else 0)
        if rows and enforce:
            self.enforce_budgets()
        return len(rows)

    def _rows(
        self, points: Iterable[Point], now: int, level: int
    ) -> Iterator[tuple[int, int, int, int, bytes, str | None]]:
        from gateway.forward.points import SCHEMA as MEASUREMENTS

        for p in points:
            line = encode(p, self.precision)
            if line is None:
                continue
            cls = MEASUREMENTS[p.measurement].cls
            doc = _doc(p) if cls is PointClass.SUMMARY else None
            yield (int(cls), p.ts_ms, now, level, line, doc)

    # -- the drain ----------------------------------------------------------------------------

    def checkpoint(self, dest: str) -> int:
        row = (
            self._require()
            .execute("SELECT through_id FROM checkpoints WHERE dest=?", (dest,))
            .fetchone()
        )
        return int(row[0]) if row else 0

    def next_batch(self, dest: str, max_points: int, max_bytes: int) -> Batch | None:
        """The oldest undelivered points for ``dest``, up to the limits (at least one)."""
        rows = (
            self._require()
            .execute(
                "SELECT id, line FROM points WHERE id > ? ORDER BY id LIMIT ?",
                (self.checkpoint(dest), max_points),
            )
            .fetchall()
        )
        if not rows:
            return None
        lines: list[bytes] = []
        size = 0
        last = rows[0][0]
        for pid, line in rows:
            if lines and size + len(line) + 1 > max_bytes:
                break
            lines.append(line)
            size += len(line) + 1
            last = pid
        self.inflight_through = max(self.inflight_through, last)
        return Batch(rows[0][0], last, lines)

    def oldest_enqueued_ms(self, dest: str) -> int | None:
        row = (
            self._require()
            .execute(
                "SELECT enq_ms FROM points WHERE id > ? ORDER BY id LIMIT 1",
                (self.checkpoint(dest),),
            )
            .fetchone()
        )
        return int(row[0]) if row else None

    def delivered(self, dest: str, batch: Batch) -> None:
        """The store confirmed ``batch`` (2xx): advance the checkpoint, forget the points."""
        self._advance(dest, batch, None)

    def quarantine(self, dest: str, batch: Batch, status: int, reason: str) -> None:
        """The store refused ``batch`` for good (400): keep it aside with the reason, go on."""
        self._advance(dest, batch, (status, reason))
        _LOGGER.error(
            "forward: %s refused %d points (ids %d..%d, HTTP %d): %s; quarantined",
            dest, batch.points, batch.first_id, batch.last_id, status, reason,
        )  # fmt: skip

    def _advance(self, dest: str, batch: Batch, refused: tuple[int, str] | None) -> None:
        db = self._require()
        now = _now_ms()
        db.execute("BEGIN IMMEDIATE")
        try:
            if refused is not None:
                db.execute(
                    "INSERT INTO quarantine (dest, at_ms, status, reason, first_id, last_id,"
                    " points, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (dest, now, refused[0], refused[1][:2000], batch.first_id, batch.last_id,
                     batch.points, batch.body()),
                )  # fmt: skip
            db.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?) ON CONFLICT(dest) DO UPDATE"
                " SET through_id = max(through_id, excluded.through_id), updated_ms = excluded.updated_ms",
                (dest, batch.last_id, now),
            )
            (through,) = db.execute("SELECT min(through_id) FROM checkpoints").fetchone()
            removed = db.execute(
                "SELECT cls, count(*), coalesce(sum(length(line) + coalesce(length(doc), 0)), 0)"
                " FROM points WHERE id <= ? GROUP BY cls",
                (through,),
            ).fetchall()
            db.execute("DELETE FROM points WHERE id <= ?", (through,))
            db.execute("COMMIT")
        except BaseException:
            rollback(db)  # never "cannot rollback" over the cause (SQLITE_FULL)
            raise
        for cls, n, size in removed:
            self._count[PointClass(cls)] -= n
            self._bytes[PointClass(cls)] -= size

    # -- what operators and metrics see -------------------------------------------------------

    def evictions(self) -> dict[str, int]:
        """Points evicted so far, by kind (kept in memory: metrics read it from the loop)."""
        return dict(self._evicted)

    def counts(self) -> tuple[dict[PointClass, int], dict[PointClass, int]]:
        return dict(self._count), dict(self._bytes)

    def stats(self, dest: str | None = None) -> BacklogStats:
        db = self._require()
        q = db.execute("SELECT count(*), coalesce(sum(points), 0) FROM quarantine").fetchone()
        oldest = db.execute("SELECT min(enq_ms) FROM points").fetchone()[0]
        return BacklogStats(
            points={c.name.lower(): n for c, n in self._count.items()},
            bytes={c.name.lower(): n for c, n in self._bytes.items()},
            oldest_enqueued_ms=self.oldest_enqueued_ms(dest) if dest else oldest,
            evictions=self.evictions(),
            quarantined_batches=int(q[0]),
            quarantined_points=int(q[1]),
            checkpoints=dict(db.execute("SELECT dest, through_id FROM checkpoints").fetchall()),
        )

    def quarantined(self) -> list[tuple[int, int, str, int]]:
        """(status, points, reason, at_ms) of every quarantined batch, oldest first."""
        return (
            self._require()
            .execute("SELECT status, points, reason, at_ms FROM quarantine ORDER BY id")
            .fetchall()
        )

    def quarantined_lines(self) -> Iterator[tuple[int, bytes]]:
        """(quarantine id, line) of every quarantined point, oldest first."""
        for qid, body in self._require().execute("SELECT id, body FROM quarantine ORDER BY id"):
            for line in bytes(body).splitlines():
                yield qid, line

    def lines(self, after_id: int = 0) -> Iterator[tuple[int, bytes]]:
        """Every waiting point's (id, line) after ``after_id``, in order (for export)."""
        yield from self._require().execute(
            "SELECT id, line FROM points WHERE id > ? ORDER BY id", (after_id,)
        )
