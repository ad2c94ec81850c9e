"""The fusion rule's drift path (``cusum_k``/``cusum_h``/``quick``): a score hovering just under
the threshold, or a strong short excursion, raises the alarm before ``hold_on`` rows; an alarm
the score never confirms clears quickly; with the drift path off nothing changes."""

from __future__ import annotations

import numpy as np
import pytest

from tinymodels import fusion_cv
from tinymodels.fusion_rule import ALARM, NORMAL, FusionRule, load_rule
from tinymodels.gateway_features import debounce


def test_a_score_hovering_under_the_threshold_raises_once_its_cusum_reaches_h() -> None:
    plain = FusionRule(weight=1.0, hold_on=10, hold_off=5)
    drift = FusionRule(weight=1.0, hold_on=10, hold_off=5, cusum_k=0.75, cusum_h=3.0)
    hover = [0.5] * 20 + [0.875] * 40 + [0.5] * 30
    # 0.125 above k per row: the 24th row of the hover brings the sum to 3.0.
    assert drift.predict(hover, None).tolist().index(True) == 20 + 23
    assert not plain.predict(hover, None).any()  # never above 1: the plain rule never raises
    # Normal rows below k never accumulate anything.
    assert not drift.predict([0.5, 0.74] * 100, None).any()


def test_a_strong_excursion_raises_before_hold_on_rows() -> None:
    drift = FusionRule(weight=1.0, hold_on=10, hold_off=5, cusum_k=0.9, cusum_h=3.0)
    score = [0.5] * 5 + [2.0] * 12 + [0.5] * 10
    assert drift.predict(score, None).tolist().index(True) == 5 + 2  # 1.1 + 1.1 + 1.1 >= 3


def test_an_unconfirmed_drift_alarm_clears_after_quick_rows_a_confirmed_one_after_hold_off() -> (
    None
):
    rule = FusionRule(weight=1.0, hold_on=10, hold_off=30, cusum_k=1.0, cusum_h=5.0, quick=3)
    blip = [0.5] * 5 + [4.0] * 2 + [0.5] * 40
    states = rule.states(blip, None).tolist()
    assert states[5] == NORMAL
    assert states[6] == ALARM  # 3.0 + 3.0 >= 5 on the second row
    assert states[7:9] == [ALARM] * 2
    assert states[9] == NORMAL  # 3 rows <= 1: cleared
    sustained = [0.5] * 5 + [4.0] * 12 + [0.5] * 40
    states = rule.states(sustained, None).tolist()
    end = 5 + 12
    assert states[end : end + 29] == [ALARM] * 29  # confirmed (10 rows above 1): hold_off
    assert states[end + 29] == NORMAL
    # Without quick the blip keeps the alarm for hold_off rows.
    slow_clear = FusionRule(weight=1.0, hold_on=10, hold_off=30, cusum_k=1.0, cusum_h=5.0)
    assert slow_clear.predict(blip, None)[6:36].all()


def test_with_the_drift_path_off_the_rule_is_the_plain_debounce() -> None:
    rng = np.random.default_rng(16)
    score = np.clip(rng.normal(0.8, 0.6, 2000), 0, None)
    rule = FusionRule(weight=1.0, hold_on=10, hold_off=30)
    assert rule.predict(score, None).tolist() == debounce(score > 1.0, 10, 30).tolist()
    assert rule.states(score, None).tolist() == [
        ALARM if v else NORMAL for v in rule.predict(score, None)
    ]
    # quick alone changes nothing: only a drift alarm can be unconfirmed.
    quick_only = FusionRule(weight=1.0, hold_on=10, hold_off=30, quick=3)
    assert quick_only.predict(score, None).tolist() == rule.predict(score, None).tolist()


def test_the_pointwise_grid_offers_the_drift_path_and_the_changepoint_grid_does_not() -> None:
    point = fusion_cv.pointwise_grid()
    plain = fusion_cv.grid(fusion_cv.POINTWISE_WEIGHTS)
    per_plain = 1 + len(fusion_cv.CUSUMS) * len(fusion_cv.QUICKS)
    assert len(point) == len(plain) * per_plain
    assert set(plain) <= set(point)
    assert all(r.cusum_h == 0 for r in fusion_cv.grid())
    assert {r.weight for r in point} == {1.0}
    assert "cusum" in FusionRule(cusum_k=0.9, cusum_h=3.0).label()
    assert isinstance(load_rule(), FusionRule)
    with pytest.raises(ValueError, match="cusum"):
        FusionRule(cusum_h=3.0)  # on, without a reference level
    with pytest.raises(ValueError, match="cusum"):
        FusionRule(quick=-1)
