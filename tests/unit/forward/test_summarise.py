"""Per-interval summaries: the statistics, late rows, and a restart that neither loses nor
repeats an interval."""

from __future__ import annotations

import math
import random
import statistics

from gateway.forward.points import Point
from gateway.forward.summarise import JournalRow, Summariser

IV = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % IV
CH = (("current", "A"), ("pressure", "bar"))


def _rows(n: int, seed: int = 1, start_id: int = 1) -> list[JournalRow]:
    rng = random.Random(seed)
    return [
        JournalRow(start_id + i, f"n{i % 2}", T0 + i * 1000, CH, (rng.gauss(5, 2), rng.random()))
        for i in range(n)
    ]


def _by_identity(
    points: list[Point],
) -> dict[tuple[str, tuple[tuple[str, str], ...], int], dict[str, object]]:
    return {(p.measurement, p.tags, p.ts_ms): dict(p.fields) for p in points}


def test_statistics_of_one_interval_match_the_readings() -> None:
    rows = _rows(120)  # two minutes, two nodes
    s = Summariser("s", IV, 0)
    s.add_readings(rows)
    closed = s.close(T0 + 2 * IV)
    assert closed is not None
    points = _by_identity(closed[0])
    values = [r.values[0] for r in rows if r.node_id == "n0" and r.ts_ms < T0 + IV]
    key = ("fieldgate_summary", (("channel", "current"), ("interval", "60s"), ("node", "n0"),
                                 ("site", "s"), ("unit", "A")), T0)  # fmt: skip
    f = points[key]
    assert f["count"] == len(values) == 30
    assert f["min"] == min(values)
    assert f["max"] == max(values)
    assert math.isclose(float(f["mean"]), statistics.fmean(values))  # type: ignore[arg-type]
    assert math.isclose(float(f["std"]), statistics.pstdev(values), rel_tol=1e-9)  # type: ignore[arg-type]
    assert f["last"] == values[-1]
    assert f["p95"] == sorted(values)[math.ceil(0.95 * 30) - 1]
    quality = [p for p in closed[0] if p.measurement == "fieldgate_quality"]
    assert {dict(p.fields)["samples"] for p in quality} == {30}
    assert len(quality) == 4  # two nodes x two intervals


def test_an_interval_closes_only_after_the_grace_and_late_rows_are_counted() -> None:
    s = Summariser("s", IV, 10_000)
    s.add_readings(_rows(30))
    early = s.close(T0 + IV + 5_000)
    assert early is None or early[0] == [], "still within the grace period"
    closed = s.close(T0 + IV + 10_000)
    assert closed is not None
    s.add_readings([JournalRow(999, "n0", T0 + 5_000, CH, (1.0, 1.0))])  # for a closed interval
    later = s.close(T0 + 2 * IV + 10_000, {})
    assert later is not None
    (quality,) = [p for p in later[0] if p.measurement == "fieldgate_quality"]
    assert dict(quality.fields)["late"] == 1
    assert quality.ts_ms == T0 + IV, "reported on the interval that closed now"


def test_gaps_and_duplicates_come_from_the_journal_counters_and_set_completeness() -> None:
    s = Summariser("s", IV, 0, state={"totals": {}})
    s.add_readings(_rows(60))
    closed = s.close(T0 + IV, {"n0": (30, 4, 10), "n1": (30, 0, 0)})
    assert closed is not None
    q = {
        dict(p.tags)["node"]: dict(p.fields)
        for p in closed[0]
        if p.measurement == "fieldgate_quality"
    }
    assert q["n0"]["gaps"] == 10
    assert q["n0"]["duplicates"] == 4
    assert q["n0"]["completeness_pct"] == 75.0
    assert q["n1"]["completeness_pct"] == 100.0


def test_a_restart_from_the_stored_state_repeats_and_loses_no_interval() -> None:
    rows = _rows(300)  # five minutes
    whole = Summariser("s", IV, 0)
    whole.add_readings(rows)
    expected = whole.close(T0 + 5 * IV)
    assert expected is not None

    first = Summariser("s", IV, 0)
    first.add_readings(rows[:150])  # 2.5 minutes in
    part = first.close(T0 + 2 * IV)
    assert part is not None
    first.add_readings(rows[150:200])  # consumed but never stored: lost in the crash
    points, state = part
    again = Summariser("s", IV, 0, state=state)
    assert again.replay_from_id == 121, "the open third minute starts at row 121"
    replay = [r for r in rows if r.id >= again.replay_from_id]
    again.add_readings(replay)
    rest = again.close(T0 + 5 * IV)
    assert rest is not None
    got = points + rest[0]
    assert len(got) == len(expected[0])
    assert _by_identity(got) == _by_identity(expected[0])
