"""A total-queue checker (after Jepsen's) over three records of the same readings.

``check`` is pure: it takes what the nodes emitted and saw acknowledged, what the journal
holds, what the store holds and what the gateway accounted for, and returns the counts
that ``bench/soak/__init__.py`` defines. The collectors below read those records from the
simulator, the journal, the backlog and VictoriaMetrics' export API.
"""

from __future__ import annotations

import json
import math
import sqlite3
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.soak.stack import RAW_CHANNEL
from firmware_tools.sim.fleet import Simulator
from tests.fixtures.servers import VictoriaMetrics

Key = tuple[str, int, int]  # (node, boot, seq)
Identity = tuple[str, int]  # (node, ts_ms) of a raw point in the store


@dataclass(frozen=True, slots=True)
class JournalReading:
    key: Key
    ts_ms: int
    rx_ms: int
    value: float  # of RAW_CHANNEL


@dataclass
class Accounted:
    evicted_raw: int = 0  # raw points the forwarding budget evicted
    journal_late: int = 0  # readings that arrived after their interval closed (not forwarded)
    quarantined: int = 0  # points the store refused (400)
    backlog_left: int = 0  # points still waiting when the run ended


@dataclass
class Verdict:
    emitted: int = 0
    acknowledged: int = 0
    journal: int = 0
    store: int = 0
    lost_journal: int = 0
    lost_store: int = 0
    missing_in_store: int = 0
    unexpected_journal: int = 0
    unexpected_store: int = 0
    duplicated: int = 0
    redelivered: int = 0
    recovered: int = 0
    unacked_at_end: int = 0
    collisions: int = 0
    accounted: Accounted = field(default_factory=Accounted)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.lost_journal + self.lost_store

    @property
    def unexpected(self) -> int:
        return self.unexpected_journal + self.unexpected_store


def check(
    emitted: set[Key],
    acked_up_to: Mapping[tuple[str, int], int],
    journal: Iterable[JournalReading],
    store: Mapping[Identity, list[float]],
    *,
    accounted: Accounted,
    resendable: set[Identity],
) -> Verdict:
    v = Verdict(accounted=accounted)
    v.emitted = len(emitted)
    acked = {k for k in emitted if k[2] <= acked_up_to.get((k[0], k[1]), 0)}
    v.acknowledged = len(acked)
    rows = {r.key: r for r in journal}
    v.journal = len(rows)
    ex = v.examples

    lost_j = acked - rows.keys()
    v.lost_journal = len(lost_j)
    ex["lost_journal"] = [str(k) for k in sorted(lost_j)[:5]]
    unexpected_j = rows.keys() - emitted
    v.unexpected_journal = len(unexpected_j)
    ex["unexpected_journal"] = [str(k) for k in sorted(unexpected_j)[:5]]
    v.recovered = len((emitted - acked) & rows.keys())
    v.unacked_at_end = len(emitted - acked)

    by_identity: dict[Identity, list[JournalReading]] = {}
    for r in rows.values():
        by_identity.setdefault((r.key[0], r.ts_ms), []).append(r)
    v.collisions = sum(len(rs) - 1 for rs in by_identity.values() if len(rs) > 1)
    v.store = sum(len(values) for values in store.values())

    # Within one identity, readings and samples are matched by value: a collision (two
    # readings on one timestamp) is counted apart, not as a loss, when the store holds both.
    missing: list[Identity] = []
    unexpected_s: list[Identity] = []
    for ident in by_identity.keys() | store.keys():
        left = list(store.get(ident, ()))
        matched: list[float] = []
        for r in by_identity.get(ident, ()):
            k = next((n for n, x in enumerate(left) if _close(x, r.value)), None)
            if k is None:
                missing.append(ident)
            else:
                matched.append(left.pop(k))
        for x in left:
            if not any(_close(x, m) for m in matched):
                unexpected_s.append(ident)  # no such reading, or another value
            elif ident in resendable:
                v.redelivered += 1
            else:
                v.duplicated += 1
                ex.setdefault("duplicated", []).append(str(ident))
    v.missing_in_store = len(missing)
    budget = accounted.evicted_raw + accounted.journal_late + accounted.backlog_left
    v.lost_store = max(0, v.missing_in_store - budget - accounted.quarantined)
    ex["missing_in_store"] = [str(i) for i in sorted(missing)[:5]]
    v.unexpected_store = len(unexpected_s)
    ex["unexpected_store"] = [str(i) for i in sorted(unexpected_s)[:5]]
    ex["duplicated"] = ex.get("duplicated", [])[:5]
    return v


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


# -- collectors -------------------------------------------------------------------------------


def emitted_keys(sims: Iterable[Simulator]) -> set[Key]:
    """Every sample a node transmitted at least once: the simulator's ground truth."""
    return {
        (node_id, r.boot_id, r.seq)
        for sim in sims
        for node_id, node in sim.nodes.items()
        for r in node.ground_truth
    }


def journal_readings(path: Path) -> list[JournalReading]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        sets = {
            i: [c.split(":", 1)[0] for c in spec.split(",")]
            for i, spec in db.execute("SELECT id, spec FROM channel_sets")
        }
        out = []
        for node, boot, seq, ts, rx, cs, vals in db.execute(
            "SELECT node_id, boot_id, seq, ts_ms, rx_ms, channel_set, vals FROM readings"
        ):
            names = sets[cs]
            values = struct.unpack(f"<{len(vals) // 8}d", vals)
            value = values[names.index(RAW_CHANNEL)] if RAW_CHANNEL in names else math.nan
            out.append(JournalReading((node, boot, seq), ts, rx, value))
        return out
    finally:
        db.close()


def store_samples(vm: VictoriaMetrics, site: str) -> dict[Identity, list[float]]:
    """Every raw sample of ``RAW_CHANNEL`` VictoriaMetrics holds, by (node, timestamp)."""
    match = f'{{__name__="fieldgate_raw_value",site="{site}",channel="{RAW_CHANNEL}"}}'
    out: dict[Identity, list[float]] = {}
    for series in vm.export(match):
        node = str(series["metric"]["node"])  # type: ignore[index]
        for ts, value in zip(series["timestamps"], series["values"], strict=True):  # type: ignore[call-overload]
            out.setdefault((node, int(ts)), []).append(float(value))
    return out


def accounted(backlog: Path) -> Accounted:
    db = sqlite3.connect(f"file:{backlog}?mode=ro", uri=True, timeout=30)
    try:
        ev = dict(db.execute("SELECT kind, count FROM evictions").fetchall())
        state = dict(db.execute("SELECT key, value FROM state").fetchall())
        reported = json.loads(state.get("reported", "{}"))
        (quarantined,) = db.execute("SELECT coalesce(sum(points), 0) FROM quarantine").fetchone()
        raw_left = sum(
            1
            for (line,) in db.execute("SELECT line FROM points")
            if bytes(line).startswith(b"fieldgate_raw,")
        )
        return Accounted(
            evicted_raw=int(ev.get("raw", 0)),
            journal_late=int(reported.get("journal_late", 0)),
            quarantined=int(quarantined),
            backlog_left=raw_left,
        )
    finally:
        db.close()


def store_duplicates_by_series(vm: VictoriaMetrics, site: str) -> Counter[str]:
    """Doubles per measurement over everything forwarded (summaries too), for the log."""
    counts: Counter[str] = Counter()
    for series in vm.export(f'{{__name__=~"fieldgate_.*",site="{site}"}}'):
        name = str(series["metric"]["__name__"])  # type: ignore[index]
        seen: Counter[int] = Counter(series["timestamps"])  # type: ignore[call-overload]
        counts[name] += sum(n - 1 for n in seen.values() if n > 1)
    return counts
