"""What the forwarder writes: points, their schema, and InfluxDB line protocol (sans-IO).

A point's identity is its measurement, its tags and its source timestamp, all derived
from the data (node, channel, interval start, alert id...), never from when it was sent:
a batch sent twice overwrites itself in the store instead of doubling (architecture
invariant 4). :data:`SCHEMA` is the one list of measurements and fields; the Grafana
dashboard test checks its queries against it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

FieldValue = float | int | bool | str
# How two points of one series merge when old summaries are downsampled.
MergeOp = Literal["sum", "min", "max", "wmean", "std", "last", "upper", "pct"]


class PointClass(enum.IntEnum):
    """Backlog classes, each with its own budget; the eviction ladder goes raw → summaries."""

    ALERT = 0  # alert events and the forwarder's own loss report: never evicted
    EVENT = 1  # node status
    SUMMARY = 2
    RAW = 3


@dataclass(frozen=True, slots=True)
class Point:
    measurement: str
    tags: tuple[tuple[str, str], ...]  # sorted by key, as the store keys series
    fields: tuple[tuple[str, FieldValue], ...]
    ts_ms: int

    @property
    def series(self) -> str:
        return self.measurement + "," + ",".join(f"{k}={v}" for k, v in self.tags)


@dataclass(frozen=True, slots=True)
class Measurement:
    name: str
    cls: PointClass
    tags: tuple[str, ...]
    fields: dict[str, MergeOp]  # field -> how it merges when downsampled


SUMMARY: Final = Measurement(
    "fieldgate_summary",
    PointClass.SUMMARY,
    ("site", "node", "channel", "unit", "interval"),
    {"count": "sum", "min": "min", "max": "max", "mean": "wmean", "std": "std",
     "last": "last", "p95": "upper"},
)  # fmt: skip
QUALITY: Final = Measurement(
    "fieldgate_quality",
    PointClass.SUMMARY,
    ("site", "node", "interval"),
    {"samples": "sum", "gaps": "sum", "duplicates": "sum", "late": "sum",
     "completeness_pct": "pct"},
)  # fmt: skip
SCORE: Final = Measurement(
    "fieldgate_score",
    PointClass.SUMMARY,
    ("site", "node", "source", "model", "model_hash", "interval"),
    {"count": "sum", "max": "max", "mean": "wmean"},
)
ALERT_COUNT: Final = Measurement(
    "fieldgate_alert_count",
    PointClass.SUMMARY,
    ("site", "node", "interval"),
    {"raised": "sum", "acknowledged": "sum", "cleared": "sum", "escalated": "sum"},
)
ALERT: Final = Measurement(
    "fieldgate_alert",
    PointClass.ALERT,
    ("site", "node", "rule", "severity", "kind", "alert_id"),
    {"severity_level": "max", "value": "last", "escalations": "max"},
)
NODE_STATUS: Final = Measurement(
    "fieldgate_node_status",
    PointClass.EVENT,
    ("site", "node", "firmware", "model"),
    {"battery_mv": "last", "rssi_dbm": "last", "free_ram_bytes": "last", "uptime_s": "last",
     "boot_id": "last"},
)  # fmt: skip
RAW: Final = Measurement(
    "fieldgate_raw", PointClass.RAW, ("site", "node", "channel"), {"value": "last"}
)
FORWARD: Final = Measurement(
    "fieldgate_forward",
    PointClass.ALERT,
    ("site",),
    {"evicted_raw": "last", "downsampled_summaries": "last", "evicted_summaries": "last",
     "evicted_events": "last", "quarantined_points": "last", "journal_late": "last"},
)  # fmt: skip

SCHEMA: Final[dict[str, Measurement]] = {
    m.name: m for m in (SUMMARY, QUALITY, SCORE, ALERT_COUNT, ALERT, NODE_STATUS, RAW, FORWARD)
}


def point(
    m: Measurement, tags: Mapping[str, str], fields: Mapping[str, FieldValue], ts_ms: int
) -> Point:
    """A point of ``m``; non-finite floats are dropped (line protocol cannot carry them)."""
    unknown = set(fields) - set(m.fields)
    if unknown or set(tags) - set(m.tags):
        raise ValueError(f"{m.name}: fields/tags not in the schema: {unknown or set(tags)}")
    kept = tuple(
        (k, v)
        for k, v in sorted(fields.items())
        if not (isinstance(v, float) and not math.isfinite(v))
    )
    return Point(m.name, tuple(sorted((k, v) for k, v in tags.items() if v != "")), kept, ts_ms)


# -- line protocol ----------------------------------------------------------------------------

_MEASUREMENT_ESC: Final = str.maketrans({",": "\\,", " ": "\\ ", "\n": "\\n"})
_KEY_ESC: Final = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\n": "\\n"})
_PRECISION_SCALE: Final = {"ms": 1, "us": 1_000, "ns": 1_000_000}


def _field(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def encode(p: Point, precision: str = "ms") -> bytes | None:
    """One line of line protocol (no newline), or None for a point without fields."""
    if not p.fields:
        return None
    head = p.measurement.translate(_MEASUREMENT_ESC)
    tags = "".join(f",{k.translate(_KEY_ESC)}={v.translate(_KEY_ESC)}" for k, v in p.tags)
    fields = ",".join(f"{k.translate(_KEY_ESC)}={_field(v)}" for k, v in p.fields)
    return f"{head}{tags} {fields} {p.ts_ms * _PRECISION_SCALE[precision]}".encode()
