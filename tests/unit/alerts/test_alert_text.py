"""Alert texts show the value that was compared with the limit, in the limit's unit, and an
alert never lasts a negative time (issue 16: ``3.45 >= 4``, ``0.995 >= 1``, ``lasted -0 s``)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.alerts.config import load_alerts_config
from gateway.alerts.engine import AlertEngine
from gateway.alerts.text import shown
from gateway.events import AnomalyScore, ChannelReading, ScoreSource

S = 1000
NODE = "pump-1"


def engine(rules: dict[str, Any]) -> AlertEngine:
    return AlertEngine(load_alerts_config({"use_default_rules": False, "rules": rules}))


def score(eng: AlertEngine, t_s: float, value: float) -> list[Any]:
    return eng.observe(AnomalyScore(NODE, int(t_s * S), ScoreSource.GATEWAY, value, "2.0.0"))


def test_an_alert_raised_inside_the_hysteresis_band_reports_the_peak_that_crossed() -> None:
    # 4.31 crosses 4; 3.45 is inside the 4 - 1 band, so the condition still holds and the
    # alert is raised at 5 s with that sample: the text must not read "3.45 >= 4".
    eng = engine({"gw": {"kind": "anomaly", "threshold": 4, "hysteresis": 1, "min_duration_s": 5}})
    assert score(eng, 0, 4.31) == []
    assert score(eng, 3, 3.8) == []
    (raised,) = score(eng, 5, 3.45)
    assert raised.alert.message == "gateway anomaly score 4.31 >= 4 (x model threshold)"
    assert raised.alert.value == pytest.approx(4.31)


def test_an_alert_raised_on_a_tick_reports_the_peak_too() -> None:
    eng = engine({"gw": {"kind": "anomaly", "threshold": 1, "min_duration_s": 5}})
    score(eng, 0, 1.02)
    score(eng, 1, 1.4)
    score(eng, 2, 0.9)  # inside the default 0.2 band
    (raised,) = eng.tick(5 * S)
    assert raised.alert.message == "gateway anomaly score 1.4 >= 1 (x model threshold)"


def test_a_value_just_past_the_limit_is_never_printed_on_the_other_side() -> None:
    assert shown(1.0004, 1.0) == "1.0004"
    assert shown(0.9996, 1.0) == "0.9996"
    assert shown(1.0, 1.0) == "1"
    assert shown(6.234, 4.0) == "6.23"
    eng = engine({"hi": {"kind": "threshold", "channel": "current", "above": 10.0}})
    (raised,) = eng.observe(ChannelReading(NODE, 0, "current", 10.0001))
    assert raised.alert.message == "current 10.0001 >= 10"


def test_an_alert_cleared_by_a_sample_older_than_its_raise_lasts_zero_seconds() -> None:
    # Raised by the gateway's clock tick at 10 s; the node's next sample is stamped 9.6 s
    # (its own clock, within the skew bound) and clears it.
    eng = engine({"gw": {"kind": "anomaly", "threshold": 1, "min_duration_s": 5}})
    score(eng, 4.9, 2.0)
    (raised,) = eng.tick(10 * S)
    (cleared,) = score(eng, 9.6, 0.1)
    assert cleared.at_ms == raised.at_ms == cleared.alert.cleared_at_ms
    assert cleared.alert.cleared_at_ms - cleared.alert.raised_at_ms == 0
