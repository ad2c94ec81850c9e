"""Budgets and the eviction ladder of the backlog (invariant 5: loss is explicit).

A base class of :class:`gateway.forward.backlog.Backlog`, kept apart because it is the one
place where data is given up: every step counts what it removes, exactly.
"""

from __future__ import annotations

import abc
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from gateway.errors import StoreError
from gateway.forward.config import ForwardBudgets
from gateway.forward.downsample import coarse_key, interval_ms_of, merge, merge_into
from gateway.forward.points import Point, PointClass
from gateway.forward.storage import rollback

_LOGGER = logging.getLogger(__name__)
_Pred = Callable[[], bool]

EVICTION_KINDS: Final = ("raw", "downsampled_summaries", "summaries", "events")


def _doc(p: Point) -> str:
    return json.dumps([p.measurement, p.tags, p.fields, p.ts_ms], separators=(",", ":"))


def _from_doc(text: str) -> Point:
    m, tags, fields, ts = json.loads(text)
    return Point(m, tuple((k, v) for k, v in tags), tuple((k, v) for k, v in fields), ts)


class EvictionLadder(abc.ABC):
    """Needs the backlog's connection, per-class counters and row encoder: the abstract
    methods below, which :class:`~gateway.forward.backlog.Backlog` implements."""

    budgets: ForwardBudgets
    downsample_factor: int
    inflight_through: int
    alerts_over_budget: bool
    _count: dict[PointClass, int]
    _bytes: dict[PointClass, int]
    _evicted: dict[str, int]

    @abc.abstractmethod
    def _require(self) -> sqlite3.Connection:
        """(implemented by the backlog)"""

    @abc.abstractmethod
    def _recount(self) -> None:
        """(implemented by the backlog)"""

    @abc.abstractmethod
    def load_state(self) -> dict[str, object]:
        """(implemented by the backlog)"""

    @abc.abstractmethod
    def _rows(
        self, points: Iterable[Point], now: int, level: int
    ) -> Iterator[tuple[int, int, int, int, bytes, str | None]]:
        """(implemented by the backlog)"""

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
            rollback(db)  # never "cannot rollback" over the cause (SQLITE_FULL)
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
        """The waiting coarse point of ``key``'s series and coarse interval, if any."""
        m, tags, start = key
        length = interval_ms_of(dict(tags)["interval"])
        for pid, doc in self._require().execute(
            "SELECT id, doc FROM points WHERE cls = ? AND level = 1 AND ts_ms >= ? AND ts_ms < ?"
            " AND id > ?",
            (int(PointClass.SUMMARY), start, start + length, self.inflight_through),
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
        rows = list(self._rows(points, time.time_ns() // 1_000_000, 1))
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
        for kind, n in rows:
            self._evicted[kind] += n
        _LOGGER.warning(
            "forward: backlog over budget; evicted %s",
            ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in rows),
        )
