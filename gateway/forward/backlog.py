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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from gateway.errors import StoreError
from gateway.forward.config import ForwardBudgets
from gateway.forward.downsample import coarse_key, merge, merge_into
from gateway.forward.points import Point, PointClass, encode

_LOGGER = logging.getLogger(__name__)
_Pred = Callable[[], bool]

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

EVICTION_KINDS: Final = ("raw", "downsampled_summaries", "summaries", "events")


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


def _doc(p: Point) -> str:
    return json.dumps([p.measurement, p.tags, p.fields, p.ts_ms], separators=(",", ":"))


def _from_doc(text: str) -> Point:
    m, tags, fields, ts = json.loads(text)
    return Point(m, tuple((k, v) for k, v in tags), tuple((k, v) for k, v in fields), ts)


class Backlog:
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

    # -- lifecycle --------------------------------------------------------------------------

    def open(self) -> Backlog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")  # the CLI may share the file
            db.executescript(SCHEMA)
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
        self, points: Iterable[Point], state: dict[str, object] | None = None, *, level: int = 0
    ) -> int:
        """Append ``points`` (and the summariser ``state``) in one transaction; enforce budgets."""
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
            db.execute("ROLLBACK")
            raise
        for cls, _, _, _, line, doc in rows:
            self._count[PointClass(cls)] += 1
            self._bytes[PointClass(cls)] += len(line) + (len(doc) if doc else 0)
        if rows:
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
            db.execute("ROLLBACK")
            raise
        for cls, n, size in removed:
            self._count[PointClass(cls)] -= n
            self._bytes[PointClass(cls)] -= size

    # -- budgets and the eviction ladder ------------------------------------------------------

    def enforce_budgets(self) -> dict[str, int]:
        """Bring every class within its budget; returns what was evicted now, by kind.

        Per class: raw and events over their own budgets lose their oldest points. Over the
        total (raw + summaries + events) the ladder runs: (1) raw readings already covered
        by summaries (older than the last closed interval), oldest first; (2) old summaries
        downsampled ``downsample_factor``:1; (3) the oldest summaries; (4) the oldest events.
        Alerts are never evicted. Points being sent are never touched.
        """
        db = self._require()
        db.execute("BEGIN IMMEDIATE")
        try:
            evicted = self._ladder()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._recount()
            raise
        return evicted

    def _ladder(self) -> dict[str, int]:
        b = self.budgets
        evicted = dict.fromkeys(EVICTION_KINDS, 0)
        evicted["raw"] += self._evict_oldest(
            PointClass.RAW, lambda: self._bytes[PointClass.RAW] > b.raw_bytes
        )
        evicted["events"] += self._evict_oldest(
            PointClass.EVENT, lambda: self._bytes[PointClass.EVENT] > b.events_bytes
        )
        over = self._over_total
        if over():
            covered = int(self.load_state().get("closed_before_ms", 0))  # type: ignore[call-overload]
            evicted["raw"] += self._evict_oldest(PointClass.RAW, over, before_ts=covered)
        if over():
            evicted["downsampled_summaries"] += self._downsample(over)
        if over():
            evicted["summaries"] += self._evict_oldest(PointClass.SUMMARY, over)
        if over():
            evicted["events"] += self._evict_oldest(PointClass.EVENT, over)
        over_alerts = self._bytes[PointClass.ALERT] > b.alerts_bytes
        if over_alerts and not self.alerts_over_budget:
            _LOGGER.warning(
                "forward: alerts backlog %d bytes is over its budget %d; alerts are never"
                " evicted, so it keeps growing until the store is reachable",
                self._bytes[PointClass.ALERT], b.alerts_bytes,
            )  # fmt: skip
        self.alerts_over_budget = over_alerts
        self._count_evictions(evicted)
        return evicted

    def _over_total(self) -> bool:
        used = sum(self._bytes[c] for c in (PointClass.RAW, PointClass.SUMMARY, PointClass.EVENT))
        return used > self.budgets.total_bytes

    def _evict_oldest(self, cls: PointClass, over: _Pred, *, before_ts: int | None = None) -> int:
        db = self._require()
        evicted = 0
        chunk = 256
        while over():
            where = "cls = ? AND id > ?" + (" AND ts_ms < ?" if before_ts is not None else "")
            args: tuple[int, ...] = (int(cls), self.inflight_through)
            if before_ts is not None:
                args += (before_ts,)
            rows = db.execute(
                f"SELECT id, length(line) + coalesce(length(doc), 0) FROM points WHERE {where}"
                " ORDER BY ts_ms, id LIMIT ?",
                (*args, chunk),
            ).fetchall()
            if not rows:
                break
            # Only as many as needed: counts must be exact, not rounded up to a chunk.
            need = self._excess(cls, over)
            take, freed = [], 0
            for pid, size in rows:
                take.append((pid,))
                freed += size
                if freed >= need:
                    break
            db.executemany("DELETE FROM points WHERE id = ?", take)
            self._count[cls] -= len(take)
            self._bytes[cls] -= freed
            evicted += len(take)
        return evicted

    def _excess(self, cls: PointClass, over: _Pred) -> int:
        b = self.budgets
        if over == self._over_total:
            used = sum(
                self._bytes[c] for c in (PointClass.RAW, PointClass.SUMMARY, PointClass.EVENT)
            )
            return used - b.total_bytes
        own = {PointClass.RAW: b.raw_bytes, PointClass.EVENT: b.events_bytes}.get(cls, 0)
        return self._bytes[cls] - own

    def _downsample(self, over: _Pred) -> int:
        """Merge the oldest fine summaries, a few coarse intervals at a time, until it fits."""
        db = self._require()
        merged_away = 0
        summary = int(PointClass.SUMMARY)
        while over():
            row = db.execute(
                "SELECT min(ts_ms) FROM points WHERE cls = ? AND level = 0 AND id > ?",
                (summary, self.inflight_through),
            ).fetchone()
            if row[0] is None:
                break
            fine = [
                (pid, _from_doc(doc))
                for pid, doc in db.execute(
                    "SELECT id, doc FROM points WHERE cls = ? AND level = 0 AND id > ?"
                    " ORDER BY ts_ms, id LIMIT 2000",
                    (summary, self.inflight_through),
                )
            ]
            groups: dict[tuple[str, tuple[tuple[str, str], ...], int] | None, list[Point]] = {}
            for _, p in fine:
                groups.setdefault(coarse_key(p, self.downsample_factor), []).append(p)
            merged: list[Point] = []
            stale: list[tuple[int]] = [(pid,) for pid, _ in fine]
            for key, members in groups.items():
                if key is None:
                    raise StoreError(f"summary without an interval tag: {members[0].series}")
                existing = self._coarse_point(key)
                if existing is not None:
                    # A coarse point of this interval already waits here: fold into it, so
                    # one identity carries the whole interval (a second would overwrite it).
                    stale.append((existing[0],))
                    merged.append(merge_into(existing[1], members))
                else:
                    merged.extend(merge(members, self.downsample_factor))
            self._delete_ids(stale)
            self._insert_level1(merged)
            merged_away += len(fine)
        return merged_away

    def _coarse_point(
        self, key: tuple[str, tuple[tuple[str, str], ...], int]
    ) -> tuple[int, Point] | None:
        m, tags, start = key
        for pid, doc in self._require().execute(
            "SELECT id, doc FROM points WHERE cls = ? AND level = 1 AND ts_ms = ? AND id > ?",
            (int(PointClass.SUMMARY), start, self.inflight_through),
        ):
            p = _from_doc(doc)
            if p.measurement == m and p.tags == tags:
                return pid, p
        return None

    def _delete_ids(self, ids: list[tuple[int]]) -> None:
        db = self._require()
        for (pid,) in ids:
            row = db.execute(
                "SELECT cls, length(line) + coalesce(length(doc), 0) FROM points WHERE id = ?",
                (pid,),
            ).fetchone()
            if row is None:
                continue
            db.execute("DELETE FROM points WHERE id = ?", (pid,))
            self._count[PointClass(row[0])] -= 1
            self._bytes[PointClass(row[0])] -= row[1]

    def _insert_level1(self, points: list[Point]) -> None:
        rows = list(self._rows(points, _now_ms(), 1))
        self._require().executemany(
            "INSERT INTO points (cls, ts_ms, enq_ms, level, line, doc) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        for cls, _, _, _, line, doc in rows:
            self._count[PointClass(cls)] += 1
            self._bytes[PointClass(cls)] += len(line) + (len(doc) if doc else 0)

    def _count_evictions(self, evicted: dict[str, int]) -> None:
        rows = [(k, n) for k, n in evicted.items() if n]
        if not rows:
            return
        self._require().executemany(
            "INSERT INTO evictions VALUES (?, ?)"
            " ON CONFLICT(kind) DO UPDATE SET count = count + excluded.count",
            rows,
        )
        _LOGGER.warning(
            "forward: backlog over budget; evicted %s",
            ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in rows),
        )

    # -- what operators and metrics see -------------------------------------------------------

    def evictions(self) -> dict[str, int]:
        rows = dict(self._require().execute("SELECT kind, count FROM evictions").fetchall())
        return {k: int(rows.get(k, 0)) for k in EVICTION_KINDS}

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

    def lines(self, after_id: int = 0) -> Iterator[tuple[int, bytes]]:
        """Every waiting point's (id, line) after ``after_id``, in order (for export)."""
        yield from self._require().execute(
            "SELECT id, line FROM points WHERE id > ? ORDER BY id", (after_id,)
        )
