"""The backlog: checkpoints that only move on confirmation, and the eviction ladder with
exact counts (raw covered by summaries → downsampled summaries → oldest summaries; alerts
never)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.forward.backlog import Backlog
from gateway.forward.config import ForwardBudgets
from gateway.forward.ladder import _doc
from gateway.forward.points import ALERT, RAW, SUMMARY, Point, PointClass, encode, point

MIN = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (10 * MIN)  # a coarse (10-minute) boundary


def _summary(i: int, value: float = 1.0) -> Point:
    tags = {"site": "s", "node": "n1", "channel": "current", "unit": "A", "interval": "60s"}
    fields = {"count": 60, "min": value, "max": value + 1, "mean": value + 0.5, "std": 0.5,
              "last": value, "p95": value + 0.9}  # fmt: skip
    return point(SUMMARY, tags, fields, T0 + i * MIN)


def _raw(i: int) -> Point:
    return point(
        RAW, {"site": "s", "node": "n1", "channel": "current"}, {"value": 1.5}, T0 + i * 1000
    )


def _alert(i: int) -> Point:
    tags = {"site": "s", "node": "n1", "rule": "hot", "severity": "critical", "kind": "raised",
            "alert_id": f"a{i:04d}"}  # fmt: skip
    return point(ALERT, tags, {"severity_level": 2, "escalations": 0}, T0 + i)


def _size(p: Point) -> int:
    line = encode(p)
    assert line is not None
    return len(line) + (len(_doc(p)) if p.measurement == SUMMARY.name else 0)


def _open(tmp_path: Path, **budgets: int) -> Backlog:
    big = 1 << 30
    # model_construct: budgets smaller than a real config allows, to see single points go.
    values = {"total_bytes": big, "raw_bytes": big, "events_bytes": big, "alerts_bytes": big}
    b = ForwardBudgets.model_construct(None, **{**values, **budgets})
    return Backlog(tmp_path / "forward.db", b, downsample_factor=10).open()


def test_checkpoint_advances_only_on_delivery_and_ids_are_never_reused(tmp_path: Path) -> None:
    backlog = _open(tmp_path)
    backlog.enqueue([_summary(i) for i in range(5)])
    batch = backlog.next_batch("d", 3, 1 << 20)
    assert batch is not None
    assert (batch.first_id, batch.last_id) == (1, 3)
    again = backlog.next_batch("d", 3, 1 << 20)
    assert again is not None
    assert again.first_id == 1, "unconfirmed: the same batch again"
    backlog.delivered("d", batch)
    assert backlog.checkpoint("d") == 3
    rest = backlog.next_batch("d", 10, 1 << 20)
    assert rest is not None
    assert (rest.first_id, rest.last_id) == (4, 5)
    backlog.delivered("d", rest)
    backlog.enqueue([_summary(9)])  # the table is empty now: a reused id 1 would be skipped
    nxt = backlog.next_batch("d", 10, 1 << 20)
    assert nxt is not None
    assert nxt.first_id == 6
    backlog.close()
    reopened = _open(tmp_path)
    assert reopened.checkpoint("d") == 5
    assert reopened.stats().total_points == 1
    reopened.close()


def test_raw_covered_by_summaries_goes_first_with_exact_counts(tmp_path: Path) -> None:
    raw_size, summary_size = _size(_raw(0)), _size(_summary(0))
    raws, summaries = 200, 30
    # Room for every summary and 50 raw readings.
    total = summaries * summary_size + 50 * raw_size
    backlog = _open(tmp_path, total_bytes=total)
    backlog.enqueue([_alert(i) for i in range(40)])
    backlog.enqueue([_summary(i) for i in range(summaries)])
    # 150 of the raw readings are older than the last closed interval (covered), 50 newer.
    backlog.enqueue([_raw(i) for i in range(raws)], {"closed_before_ms": T0 + 150 * 1000})
    assert backlog.evictions() == {
        "raw": 150,
        "downsampled_summaries": 0,
        "summaries": 0,
        "events": 0,
    }
    counts, _ = backlog.counts()
    assert counts[PointClass.RAW] == 50
    assert counts[PointClass.SUMMARY] == summaries
    assert counts[PointClass.ALERT] == 40
    backlog.close()


def test_then_old_summaries_are_downsampled_then_the_oldest_evicted_alerts_never(
    tmp_path: Path,
) -> None:
    summary_size = _size(_summary(0))
    backlog = _open(tmp_path, total_bytes=100 * summary_size)
    backlog.enqueue([_alert(i) for i in range(500)])  # far over any budget: alerts stay
    backlog.enqueue([_summary(i) for i in range(100)])
    assert backlog.evictions()["downsampled_summaries"] == 0, "exactly at the budget"
    backlog.enqueue([_summary(100 + i) for i in range(20)])  # now 20 over
    ev = backlog.evictions()
    # The ladder's second step took the oldest fine summaries (one round: all 120 of them,
    # 12 coarse intervals of 10) and that was enough: nothing had to be evicted.
    assert ev == {"raw": 0, "downsampled_summaries": 120, "summaries": 0, "events": 0}
    coarse = [line for _, line in backlog.lines() if line.startswith(b"fieldgate_summary,")]
    assert len(coarse) == 12
    assert all(b"interval=600s" in line and b"count=600i" in line for line in coarse)
    assert backlog.counts()[0][PointClass.ALERT] == 500

    # Squeeze the budget: the third step evicts the oldest (coarse) summaries, exactly as
    # many as needed, and still no alert.
    backlog.budgets = backlog.budgets.model_copy(update={"total_bytes": 5 * _coarse_size(backlog)})
    backlog.enforce_budgets()
    ev = backlog.evictions()
    assert ev["summaries"] == 7
    kept = sorted(
        int(line.rsplit(b" ", 1)[1])
        for _, line in backlog.lines()
        if line.startswith(b"fieldgate_summary,")
    )
    assert kept == [T0 + i * 10 * MIN for i in range(7, 12)], "the newest five remain"
    assert backlog.counts()[0][PointClass.ALERT] == 500
    backlog.close()


def _coarse_size(backlog: Backlog) -> int:
    sizes = {n for c, n in backlog.counts()[1].items() if c is PointClass.SUMMARY}
    (total,) = sizes
    return -(-total // backlog.counts()[0][PointClass.SUMMARY])  # the largest is at most this


def test_points_in_flight_are_never_evicted(tmp_path: Path) -> None:
    size = _size(_summary(0))
    backlog = _open(tmp_path, total_bytes=10 * size)
    backlog.enqueue([_summary(i) for i in range(10)])
    batch = backlog.next_batch("d", 4, 1 << 20)
    assert batch is not None
    backlog.downsample_factor = 1000  # keep downsampling from merging everything at once
    backlog.enqueue([_summary(1000 + i) for i in range(3)])
    remaining = [int(line.rsplit(b" ", 1)[1]) for _, line in backlog.lines()]
    assert [T0 + i * MIN for i in range(4)] == remaining[:4], "the batch being sent stayed"


@pytest.mark.parametrize("budget", [0, 1024])
def test_per_class_raw_budget_drops_the_oldest_raw(tmp_path: Path, budget: int) -> None:
    backlog = _open(tmp_path, raw_bytes=budget)
    backlog.enqueue([_raw(i) for i in range(100)])
    kept = backlog.counts()[0][PointClass.RAW]
    assert backlog.evictions()["raw"] == 100 - kept
    assert kept == budget // _size(_raw(0))
    backlog.close()


def test_a_second_merge_of_a_delivered_coarse_interval_gets_its_own_identity(
    tmp_path: Path,
) -> None:
    """Identity of a merged point = its earliest member: a later merge of the same coarse
    interval never overwrites (and so erases) one the store already has."""
    size = _size(_summary(0))
    backlog = _open(tmp_path, total_bytes=3 * size)
    backlog.enqueue([_summary(i) for i in range(4)])  # minutes 0-3: over, merged into one
    first = backlog.next_batch("d", 10, 1 << 20)
    assert first is not None
    assert first.points == 1
    backlog.delivered("d", first)
    backlog.enqueue([_summary(i) for i in range(4, 8)])  # minutes 4-7 of the same 10
    second = backlog.next_batch("d", 10, 1 << 20)
    assert second is not None
    stamps = [int(line.rsplit(b" ", 1)[1]) for line in first.lines + second.lines]
    assert stamps == [T0, T0 + 4 * MIN]
    assert all(
        b"interval=600s" in line and b"count=240i" in line for line in first.lines + second.lines
    )
    backlog.close()
