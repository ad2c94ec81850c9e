"""Per-interval summaries of the journal's committed readings (sans-IO, no clock).

Rows come in journal id order (:meth:`Summariser.add_readings`); each lands in the open
bucket of its node and interval. :meth:`Summariser.close` closes every interval that
ended more than ``late_grace`` ago and returns its points together with the state that
must be stored in the same transaction: the closed-before watermark, the last consumed
journal id, and ``replay_from_id``, the lowest journal id still held only in an open bucket.

After a crash the forwarder replays the journal from ``replay_from_id``: a row of a closed
interval at or below the stored cursor was summarised already (skipped), above it it is
late (counted in the quality point, not summarised); a row of an open interval is
aggregated again. The journal may evict only rows below ``replay_from_id`` (the forwarder
holds its retention there), so no evicted reading is ever missing from a summary.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.forward.downsample import interval_tag
from gateway.forward.points import (
    ALERT_COUNT,
    QUALITY,
    RAW,
    SCORE,
    SUMMARY,
    FieldValue,
    Point,
    point,
)

_QUANTILE_SAMPLES = 10_000  # per channel and interval; past it, a systematic subsample


class JournalRow(NamedTuple):
    id: int
    node_id: str
    ts_ms: int
    channels: tuple[tuple[str, str], ...]  # (name, unit)
    values: tuple[float, ...]


@dataclass
class _Channel:
    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    last: float = math.nan
    last_ts: int = -1
    kept: list[float] = field(default_factory=list)
    stride: int = 1

    def add(self, ts: int, value: float) -> None:
        if not math.isfinite(value):
            return
        self.count += 1
        self.total += value
        self.squares += value * value
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        if ts >= self.last_ts:
            self.last, self.last_ts = value, ts
        if self.count % self.stride == 0:
            self.kept.append(value)
            if len(self.kept) >= _QUANTILE_SAMPLES:
                self.kept = self.kept[::2]
                self.stride *= 2

    def fields(self) -> dict[str, FieldValue]:
        mean = self.total / self.count
        var = max(self.squares / self.count - mean * mean, 0.0)
        ordered = sorted(self.kept)
        p95 = ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)] if ordered else mean
        return {"count": self.count, "min": self.low, "max": self.high, "mean": mean,
                "std": math.sqrt(var), "last": self.last, "p95": p95}  # fmt: skip


@dataclass
class _Bucket:
    min_id: int | None = None
    samples: int = 0
    channels: dict[tuple[str, str], _Channel] = field(default_factory=dict)
    scores: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)  # n, max, sum
    alerts: Counter[str] = field(default_factory=Counter)


class Summariser:
    def __init__(
        self,
        site: str,
        interval_ms: int,
        late_grace_ms: int,
        *,
        raw_channels: Iterable[str] = (),
        raw_every: int = 1,
        state: dict[str, object] | None = None,
    ) -> None:
        self.site = site
        self.interval_ms = interval_ms
        self.late_grace_ms = late_grace_ms
        self.raw_channels = frozenset(raw_channels)
        self.raw_every = raw_every
        self._tag = interval_tag(interval_ms)
        state = state or {}
        self.closed_before_ms = int(state.get("closed_before_ms", 0))  # type: ignore[call-overload]
        self.stored_cursor = int(state.get("cursor_id", 0))  # type: ignore[call-overload]
        self.replay_from_id = int(state.get("replay_from_id", 1))  # type: ignore[call-overload]
        totals = state.get("totals", {})
        self._fresh = "totals" not in state
        self._totals: dict[str, list[int]] = dict(totals) if isinstance(totals, dict) else {}
        self.cursor = max(self.replay_from_id - 1, 0)
        self._open: dict[tuple[str, int], _Bucket] = {}
        self._late: Counter[str] = Counter()
        self._raw: list[Point] = []
        self.late_total = 0

    # -- input ----------------------------------------------------------------------------

    def _bucket(self, node_id: str, ts_ms: int) -> _Bucket:
        start = ts_ms - ts_ms % self.interval_ms
        b = self._open.get((node_id, start))
        if b is None:
            b = self._open[(node_id, start)] = _Bucket()
        return b

    def add_readings(self, rows: Iterable[JournalRow]) -> None:
        for row in rows:
            self.cursor = max(self.cursor, row.id)
            if row.ts_ms - row.ts_ms % self.interval_ms < self.closed_before_ms:
                if row.id > self.stored_cursor:  # else: summarised before a restart
                    self._late[row.node_id] += 1
                    self.late_total += 1
                continue
            b = self._bucket(row.node_id, row.ts_ms)
            b.min_id = row.id if b.min_id is None else min(b.min_id, row.id)
            b.samples += 1
            for key, value in zip(row.channels, row.values, strict=False):
                acc = b.channels.get(key)
                if acc is None:
                    acc = b.channels[key] = _Channel()
                acc.add(row.ts_ms, value)
            if self.raw_channels and row.id > self.stored_cursor and row.id % self.raw_every == 0:
                self._add_raw(row)

    def _add_raw(self, row: JournalRow) -> None:
        for (name, _), value in zip(row.channels, row.values, strict=False):
            if name in self.raw_channels:
                tags = {"site": self.site, "node": row.node_id, "channel": name}
                self._raw.append(point(RAW, tags, {"value": value}, row.ts_ms))

    def add_score(
        self, node_id: str, t_ms: int, score: float, *, source: str, model: str, model_hash: str
    ) -> None:
        """A gateway or node anomaly score (kept only in memory until its interval closes)."""
        if not math.isfinite(score):
            return
        b = self._bucket(node_id, max(t_ms, self.closed_before_ms))
        acc = b.scores.setdefault((source, model, model_hash), [0, -math.inf, 0.0])
        acc[0] += 1
        acc[1] = max(acc[1], score)
        acc[2] += score

    def add_alert_event(self, node_id: str, at_ms: int, kind: str) -> None:
        self._bucket(node_id, max(at_ms, self.closed_before_ms)).alerts[kind] += 1

    # -- output ---------------------------------------------------------------------------

    def close(
        self, now_ms: int, stream_totals: dict[str, tuple[int, int, int]] | None = None
    ) -> tuple[list[Point], dict[str, object]] | None:
        """Points of every interval that ended ``late_grace`` before ``now_ms``, plus the
        state to store with them; None when no interval closed."""
        watermark = now_ms - self.late_grace_ms
        watermark -= watermark % self.interval_ms
        if watermark <= self.closed_before_ms:
            return None
        points: list[Point] = self._raw
        self._raw = []
        quality: dict[tuple[str, int], dict[str, int]] = {}
        last_closed: dict[str, int] = {}
        for (node_id, start), b in sorted(self._open.items(), key=lambda kv: kv[0][1]):
            if start >= watermark:
                continue
            del self._open[(node_id, start)]
            points.extend(self._bucket_points(node_id, start, b))
            if b.samples:
                quality[(node_id, start)] = {"samples": b.samples}
            last_closed[node_id] = start
        # Gaps, duplicates (journal deltas) and late rows go to each node's newest closed
        # interval: one quality point per identity (a second would overwrite the first).
        for node_id, extra in self._quality_deltas(stream_totals or {}).items():
            key = (node_id, last_closed.get(node_id, watermark - self.interval_ms))
            fields = quality.setdefault(key, {"samples": 0})
            fields.update(extra)
        for (node_id, start), f in quality.items():
            samples, gaps = f["samples"], f.get("gaps", 0)
            pct = 100.0 * samples / (samples + gaps) if samples + gaps else 100.0
            tags = {"site": self.site, "node": node_id, "interval": self._tag}
            fields_out: dict[str, FieldValue] = {"gaps": 0, "duplicates": 0, "late": 0, **f}
            fields_out["completeness_pct"] = pct
            points.append(point(QUALITY, tags, fields_out, start))
        self.closed_before_ms = watermark
        self.stored_cursor = self.cursor
        pending = [b.min_id for b in self._open.values() if b.min_id is not None]
        self.replay_from_id = min(pending) if pending else self.cursor + 1
        state: dict[str, object] = {
            "closed_before_ms": self.closed_before_ms,
            "cursor_id": self.stored_cursor,
            "replay_from_id": self.replay_from_id,
            "totals": self._totals,
        }
        return points, state

    def _bucket_points(self, node_id: str, start: int, b: _Bucket) -> list[Point]:
        base = {"site": self.site, "node": node_id, "interval": self._tag}
        out = [
            point(SUMMARY, {**base, "channel": name, "unit": unit}, acc.fields(), start)
            for (name, unit), acc in sorted(b.channels.items())
            if acc.count
        ]
        for (source, model, model_hash), (n, high, total) in sorted(b.scores.items()):
            tags = {**base, "source": source, "model": model, "model_hash": model_hash}
            out.append(point(SCORE, tags, {"count": int(n), "max": high, "mean": total / n}, start))
        if b.alerts:
            kinds = ("raised", "acknowledged", "cleared", "escalated")
            out.append(point(ALERT_COUNT, base, {k: b.alerts[k] for k in kinds}, start))
        return out

    def _quality_deltas(
        self, stream_totals: dict[str, tuple[int, int, int]]
    ) -> dict[str, dict[str, int]]:
        extra: dict[str, dict[str, int]] = {}
        for node_id, (received, duplicates, lost) in stream_totals.items():
            # A forwarder started on an old journal does not report its whole history.
            zero = [received, duplicates, lost] if self._fresh else [0, 0, 0]
            before = self._totals.get(node_id, zero)
            self._totals[node_id] = [received, duplicates, lost]
            gaps, dups = max(lost - before[2], 0), max(duplicates - before[1], 0)
            if gaps or dups:
                extra[node_id] = {"gaps": gaps, "duplicates": dups}
        self._fresh = False
        for node_id, n in self._late.items():
            extra.setdefault(node_id, {})["late"] = n
        self._late.clear()
        return extra
