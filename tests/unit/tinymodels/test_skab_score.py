"""The SKAB scorer on hand-made sequences whose scores are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinymodels.skab_score import (
    LOW_FN,
    LOW_FP,
    STANDARD,
    PointCounts,
    changepoints_from_prediction,
    detection_windows,
    nab_raw,
    point_counts,
    score_file,
    summarise,
    tp_reward,
)

T = np.arange(1000, 1300, dtype=np.int64)  # 300 rows at 1 Hz


def _labels() -> tuple[np.ndarray, np.ndarray]:
    """One anomaly on rows 100..179; SKAB marks its start and the row after its end."""
    anomaly = np.zeros(T.size, dtype=bool)
    anomaly[100:180] = True
    cp = np.zeros(T.size, dtype=bool)
    cp[[100, 180]] = True
    return anomaly, cp


def test_perfect_detector_scores_f1_one_and_nab_hundred_in_every_profile() -> None:
    anomaly, cp = _labels()
    totals = summarise([score_file("f", T, anomaly, cp, anomaly)])
    assert (totals.f1, totals.far, totals.mar) == (1.0, 0.0, 0.0)
    for profile in ("standard", "lowfp", "lowfn"):
        assert totals.nab_score(profile) == pytest.approx(100.0)


def test_null_detector_scores_zero_nab_and_full_miss_rate() -> None:
    anomaly, cp = _labels()
    totals = summarise([score_file("f", T, anomaly, cp, np.zeros(T.size, dtype=bool))])
    assert totals.f1 == 0.0
    assert totals.far == 0.0
    assert totals.mar == 1.0
    for profile in ("standard", "lowfp", "lowfn"):
        assert totals.nab_score(profile) == pytest.approx(0.0)


def test_pointwise_metrics_use_skab_definitions() -> None:
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    pred = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0], dtype=bool)
    c = point_counts(truth, pred)
    assert c == PointCounts(tp=3, fp=2, tn=4, fn=1)
    assert c.f1 == pytest.approx(3 / (3 + 1.5))
    assert c.far == pytest.approx(2 / 6)
    assert c.mar == pytest.approx(1 / 4)


def test_counts_are_pooled_over_files_not_averaged() -> None:
    a = score_file("a", T[:4], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0])  # f1 = 1
    b = score_file("b", T[:4], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 1])  # tp 1, fn 3
    totals = summarise([a, b])
    assert totals.f1 == pytest.approx(3 / (3 + 3 / 2))


def test_changepoints_are_every_change_and_a_leading_one() -> None:
    cp = changepoints_from_prediction([1, 1, 0, 0, 1, 0])
    assert cp.tolist() == [True, False, True, False, True, True]
    assert not changepoints_from_prediction([0, 0, 0]).any()


def test_tanh_curve_runs_from_a_tp_at_window_start_to_a_fp_at_its_end() -> None:
    for profile in (STANDARD, LOW_FP, LOW_FN):
        assert tp_reward(0.0, profile) == pytest.approx(profile.a_tp)
        assert tp_reward(1.0, profile) == pytest.approx(profile.a_fp)
        mid = (profile.a_tp + profile.a_fp) / 2
        assert tp_reward(0.5, profile) == pytest.approx(mid, abs=0.01)
    # A quarter of the way in the reward is still high: tanh(-pi/4)/tanh(pi/2) scaled.
    expected = 1.11 / 2 * math.tanh(math.pi / 4) / math.tanh(math.pi / 2) + 1.11 / 2 - 0.11
    assert tp_reward(0.25, STANDARD) == pytest.approx(expected, abs=0.005)


def test_detections_outside_windows_cost_a_fp_each_and_late_ones_in_window_are_ignored() -> None:
    _, cp = _labels()
    pred_cp = np.zeros(T.size, dtype=bool)
    pred_cp[[10, 20]] = True  # two false alarms before the first window
    pred_cp[[100, 110, 120]] = True  # first window: only row 100 counts
    # the second window (row 180) is missed
    raw = nab_raw(T, cp, pred_cp, STANDARD)
    assert raw.score == pytest.approx(2 * -0.11 + 1.0 - 1.0)
    assert (raw.null, raw.perfect) == (-2.0, 2.0)
    assert raw.normalised == pytest.approx(100 * (-0.22 + 2) / 4)
    low_fn = nab_raw(T, cp, pred_cp, LOW_FN)
    assert low_fn.normalised == pytest.approx(100 * (-0.22 + 1 - 2 + 4) / 6)


def test_windows_are_sixty_seconds_to_the_right_and_overlaps_cut_the_later_one() -> None:
    cp = np.zeros(T.size, dtype=bool)
    cp[[10, 40, 200]] = True
    wins = detection_windows(T, cp)
    assert wins == [(1010.0, 1070.0), (1070.0, 1100.0), (1200.0, 1260.0)]


def test_window_edges_are_inclusive_and_use_timestamps_not_rows() -> None:
    t = np.array([0, 2, 4, 60, 61, 200], dtype=np.int64)  # gaps as in real SKAB files
    cp = np.array([1, 0, 0, 0, 0, 0], dtype=bool)
    at_end = np.array([0, 0, 0, 1, 0, 0], dtype=bool)
    just_after = np.array([0, 0, 0, 0, 1, 0], dtype=bool)
    assert nab_raw(t, cp, at_end, STANDARD).score == pytest.approx(-0.11)
    assert nab_raw(t, cp, just_after, STANDARD).score == pytest.approx(-1.0 - 0.11)
