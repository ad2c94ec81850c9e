"""Merging old summary points into coarser ones (the eviction ladder's second step).

Pure functions. Points of one series whose timestamps fall into one coarse interval
(``factor`` × their own) merge into one point, with the ``interval`` tag naming the coarse
length, stamped with its earliest member's time: a new, deterministic identity, so the merged
point never overwrites a fine one already delivered, nor an earlier merge of the same coarse
interval that was delivered before the rest of that interval was downsampled. Counts add up, min/max/mean/std stay
exact (pooled), ``last`` is the latest, ``p95`` becomes the largest p95 (an upper bound).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from gateway.forward.points import SCHEMA, FieldValue, Point


def interval_tag(interval_ms: int) -> str:
    return f"{interval_ms / 1000:g}s"


def interval_ms_of(tag: str) -> int:
    return round(float(tag.removesuffix("s")) * 1000)


def coarse_key(p: Point, factor: int) -> tuple[str, tuple[tuple[str, str], ...], int] | None:
    """(measurement, coarse tags, coarse start) of ``p``; None when it has no interval."""
    tags = dict(p.tags)
    if "interval" not in tags:
        return None
    coarse = interval_ms_of(tags["interval"]) * factor
    tags["interval"] = interval_tag(coarse)
    return p.measurement, tuple(sorted(tags.items())), p.ts_ms - p.ts_ms % coarse


def merge(points: Iterable[Point], factor: int) -> list[Point]:
    """Downsample ``points`` (fine or already coarse) into one point per coarse key."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...], int], list[Point]] = defaultdict(list)
    for p in points:
        key = coarse_key(p, factor)
        if key is None:
            raise ValueError(f"{p.series}: not a summary (no interval tag)")
        groups[key].append(p)
    out = []
    for (m, tags, _), members in groups.items():
        members.sort(key=lambda p: p.ts_ms)
        out.append(Point(m, tags, _merge_fields(m, members), members[0].ts_ms))
    return out


def merge_into(existing: Point, fine: list[Point]) -> Point:
    """``existing`` coarse point with more fine points of its interval folded in."""
    members = sorted([existing, *fine], key=lambda p: p.ts_ms)
    return Point(
        existing.measurement,
        existing.tags,
        _merge_fields(existing.measurement, members),
        existing.ts_ms,
    )


def _merge_fields(measurement: str, members: list[Point]) -> tuple[tuple[str, FieldValue], ...]:
    ops = SCHEMA[measurement].fields
    rows = [dict(p.fields) for p in members]
    weight_key = "count" if "count" in ops else None
    weights = [float(r.get(weight_key, 1)) if weight_key else 1.0 for r in rows]
    total_w = sum(weights)
    out: dict[str, FieldValue] = {}
    for name, op in ops.items():
        present = [(w, r[name]) for w, r in zip(weights, rows, strict=True) if name in r]
        if not present:
            continue
        values = [float(v) for _, v in present]
        if op == "sum":
            out[name] = sum(int(v) for _, v in present)
        elif op in ("min",):
            out[name] = min(values)
        elif op in ("max", "upper"):
            out[name] = max(values)
        elif op == "last":
            out[name] = present[-1][1]
        elif op == "wmean":
            out[name] = sum(w * v for (w, _), v in zip(present, values, strict=True)) / (
                sum(w for w, _ in present) or 1.0
            )
        elif op == "std":
            out[name] = _pooled_std(rows, weights, total_w)
    if "completeness_pct" in ops:
        samples, gaps = int(out.get("samples", 0)), int(out.get("gaps", 0))
        out["completeness_pct"] = 100.0 * samples / (samples + gaps) if samples + gaps else 100.0
    return tuple(sorted(out.items()))


def _pooled_std(rows: list[dict[str, FieldValue]], weights: list[float], total: float) -> float:
    if total <= 0:
        return 0.0
    mean = sum(w * float(r.get("mean", 0.0)) for w, r in zip(weights, rows, strict=True)) / total
    second = (
        sum(
            w * (float(r.get("std", 0.0)) ** 2 + float(r.get("mean", 0.0)) ** 2)
            for w, r in zip(weights, rows, strict=True)
        )
        / total
    )
    return math.sqrt(max(second - mean * mean, 0.0))
