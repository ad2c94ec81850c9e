"""What a level alert says: the value that was compared, the limit, and the limit's unit.

A level detector raises once a value has crossed its limit and held past it (hysteresis,
minimum duration), so the sample seen at the moment of raising may sit inside the
hysteresis band, below the limit. The text therefore reports the most extreme value since
the condition began (:attr:`~gateway.alerts.state.LevelDetector.reported`), which is the one
compared with the limit, and prints it with enough digits that rounding never makes it look
like it is on the wrong side (``0.9996`` is not shown as ``1`` next to ``< 1``, and a value
just above a limit is not shown equal to a smaller one).
"""

from __future__ import annotations

from gateway.alerts.config import AnomalyRule, Rule, ThresholdRule
from gateway.alerts.state import LevelDetector
from tinymodels.attribution import describe

ANOMALY_UNIT = "x model threshold"
# AnomalyScore.model_version of a node scored from its own baseline (gateway/pipeline/fallback.py).
OWN_BASELINE_PREFIX = "own-baseline:"


def score_note(channels: tuple[tuple[str, float], ...], model_version: str) -> str:
    """What an anomaly alert adds: the channels behind the score, and the detector when it was
    not the gateway model (``T2+MSET on its own baseline``)."""
    parts = [describe(channels)] if channels else []
    if model_version.startswith(OWN_BASELINE_PREFIX):
        parts.append("T2+MSET on its own baseline")
    return "; ".join(parts)


def shown(value: float, limit: float, *, digits: int = 3) -> str:
    """``value`` with at least ``digits`` significant digits, and more if rounding would put
    it on the other side of ``limit`` than it is (or make it equal when it is not)."""
    for d in range(digits, 12):
        text = f"{value:.{d}g}"
        rounded = float(text)
        if (rounded >= limit) == (value >= limit) and (rounded == limit) == (value == limit):
            return text
    return repr(value)


def level_message(cfg: Rule, det: LevelDetector) -> str:
    """``current 11 >= 10``, ``gateway anomaly score 6.2 >= 1 (x model threshold; pressure
    71 %, current 18 %)`` (the channels behind the peak score, when known), ``battery 3210 mV
    <= 3300 mV``."""
    v = det.reported
    if v is None:  # restored alert without a sample yet: say what the rule is
        v = det.on
    op = ">=" if det.above else "<="
    if isinstance(cfg, ThresholdRule):
        return f"{cfg.channel} {shown(v, det.on)} {op} {det.on:g}"
    if isinstance(cfg, AnomalyRule):
        why = f"; {det.peak_note}" if det.peak_note else ""
        score = shown(v, det.on)
        return f"{cfg.source} anomaly score {score} >= {cfg.threshold:g} ({ANOMALY_UNIT}{why})"
    return f"battery {v:.0f} mV <= {det.on:.0f} mV"
