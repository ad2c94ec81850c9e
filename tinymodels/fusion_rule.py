"""The fused anomaly score: one rule over the node's and the gateway's scores (numpy only).

Both inputs are in threshold units (1.0 = that model's own threshold, each fitted on the
machine's own normal rows). The fused score is

    fused = (weight * gateway + (1 - weight) * node) / factor

so 1.0 is again the alarm threshold; a row is anomalous once ``fused > 1`` has held for
``hold_on`` rows, and normal again after ``hold_off`` rows below.

Settling (``release`` > 0): on SKAB almost every false-alarm row comes after an anomaly has
ended, while the process settles at a level a little off its old normal (other/6, 8, 10, 12,
valve1/1): the score falls from its peak but stays above 1. An alarm that has lasted
``min_alarm_rows`` therefore ends when the fused score has stayed below ``release`` x its
peak for ``hold_off`` rows; the machine is then *settled-abnormal* (:data:`SETTLED`, shown,
not alarmed) until the score falls below 1 (normal) or rises past ``rearm`` x the lowest
settled level (a new alarm). So suppressing the repeat keeps a machine that stays abnormal
visible as a state of its own.

Drift path (``cusum_h`` > 0): the score of a slowly developing fault (a valve closing over a
minute) can hover just under 1 for tens of rows, then flicker across it. A one-sided CUSUM of
the fused score, ``S = max(0, S + fused - cusum_k)``, accumulates that sustained elevation
(and any strong excursion fast); the alarm is also raised once ``S >= cusum_h``. Until the
score has stayed above 1 for ``hold_on`` rows such an alarm is *unconfirmed*, and with
``quick`` > 0 it clears after ``quick`` rows at or below 1 instead of ``hold_off``, so a
blip does not leave a ``hold_off`` tail of false alarm rows. ``S`` restarts at 0 whenever an
alarm is raised and stays 0 until the machine is normal again.

A missing node score (a node without a model, or one whose channels the node model does not
cover) counts as the gateway score itself, so the rule degrades to the gateway alone.

The shipped rule (``tinymodels/artifacts/fusion.json``) is chosen by
:mod:`tinymodels.fusion_cv`; the gateway's pipeline applies the same function per node.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tinymodels.gateway_features import debounce

DEFAULT_FUSION_RULE = Path(__file__).with_name("artifacts") / "fusion.json"


@dataclass(frozen=True, slots=True)
class FusionRule:
    weight: float = 0.5  # the gateway's share; 1.0 = gateway only, 0.0 = node only
    factor: float = 1.0
    hold_on: int = 10
    hold_off: int = 30
    release: float = 0.0  # 0 = no settling
    rearm: float = 3.0
    min_alarm_rows: int = 60
    cusum_k: float = 0.0  # the drift path's reference level (threshold units)
    cusum_h: float = 0.0  # 0 = no drift path; else also raise once the CUSUM reaches it
    quick: int = 0  # 0 = off; else an unconfirmed drift alarm clears after `quick` rows <= 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0 or self.factor <= 0:
            raise ValueError("weight must be in [0, 1] and factor > 0")
        if self.hold_on < 1 or self.hold_off < 1:
            raise ValueError("hold_on and hold_off must be >= 1")
        if self.cusum_h < 0 or self.quick < 0 or (self.cusum_h > 0 and self.cusum_k <= 0):
            raise ValueError("cusum_h and quick must be >= 0 (0 = off); cusum_k > 0 when on")

    def label(self) -> str:
        return (
            f"weight={self.weight:g} factor={self.factor:g} hold={self.hold_on}/{self.hold_off}"
            f" release={self.release:g} rearm={self.rearm:g}"
            + (
                f" cusum={self.cusum_k:g}/{self.cusum_h:g} quick={self.quick}"
                if self.cusum_h > 0
                else ""
            )
        )

    def fuse(self, gateway: npt.ArrayLike, node: npt.ArrayLike | None) -> npt.NDArray[np.float32]:
        g = np.asarray(gateway, dtype=np.float64)
        n = g if node is None else np.where(np.isnan(np.asarray(node, np.float64)), g, node)
        return ((self.weight * g + (1.0 - self.weight) * n) / self.factor).astype(np.float32)

    def predict(self, gateway: npt.ArrayLike, node: npt.ArrayLike | None) -> npt.NDArray[np.bool_]:
        """Alarm per row (causal)."""
        if self.release <= 0 and self.cusum_h <= 0:
            return debounce(self.fuse(gateway, node) > 1.0, self.hold_on, self.hold_off)
        return self.states(gateway, node) == ALARM

    def states(self, gateway: npt.ArrayLike, node: npt.ArrayLike | None) -> npt.NDArray[np.int8]:
        """:data:`NORMAL`, :data:`ALARM` or :data:`SETTLED` per row (causal)."""
        tracker = StateTracker(self)
        fused = self.fuse(gateway, node).tolist()
        return np.array([tracker.update(v) for v in fused], dtype=np.int8)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


NORMAL, ALARM, SETTLED = 0, 1, 2


class StateTracker:
    """The row-by-row state machine of :meth:`FusionRule.states`, for a live stream."""

    def __init__(self, rule: FusionRule) -> None:
        self.rule = rule
        self.state = NORMAL
        self._run = 0
        self._peak = 0.0
        self._rows = 0
        self._floor = 0.0
        self._sum = 0.0
        self._above = 0
        self._provisional = False

    def update(self, fused: float) -> int:
        r = self.rule
        if self.state == NORMAL:
            self._run = self._run + 1 if fused > 1.0 else 0
            drift = r.cusum_h > 0
            if drift:
                self._sum = max(0.0, self._sum + fused - r.cusum_k)
            if self._run >= r.hold_on or (drift and self._sum >= r.cusum_h):
                above = self._run
                self._alarm(fused)
                self._above = above
                self._provisional = above < r.hold_on
        elif self.state == ALARM:
            self._peak = max(self._peak, fused)
            self._rows += 1
            settling = r.release > 0 and self._rows >= r.min_alarm_rows
            low = fused <= 1.0 or (settling and fused < r.release * self._peak)
            self._run = self._run + 1 if low else 0
            self._above = self._above + 1 if fused > 1.0 else 0
            if self._above >= r.hold_on:
                self._provisional = False
            hold = r.quick if self._provisional and r.quick > 0 else r.hold_off
            if self._run >= hold:
                self.state = NORMAL if fused <= 1.0 else SETTLED
                self._run = 0
                self._floor = fused
        else:
            self._floor = min(self._floor, fused)
            if fused > max(r.rearm * self._floor, 1.0):
                self._alarm(fused)
            elif fused <= 1.0:
                self._run += 1
                if self._run >= r.hold_off:
                    self.state, self._run = NORMAL, 0
            else:
                self._run = 0
        return self.state

    @property
    def level(self) -> float:
        """The fused score that raises an alarm now: 1.0, or while settled the rearm level."""
        if self.state == SETTLED:
            return max(self.rule.rearm * self._floor, 1.0)
        return 1.0

    def _alarm(self, fused: float) -> None:
        self.state, self._run, self._peak, self._rows = ALARM, 0, fused, 0
        self._sum, self._above, self._provisional = 0.0, 0, False


def load_rule(path: Path = DEFAULT_FUSION_RULE) -> FusionRule:
    """The pointwise rule (alarms): what the gateway runs."""
    obj = json.loads(path.read_text())
    return FusionRule(**obj["rule"])


def load_changepoint_rule(path: Path = DEFAULT_FUSION_RULE) -> FusionRule:
    """The changepoint rule (where its alarm starts and ends are the changepoints NAB scores);
    the pointwise rule when the file has none."""
    obj = json.loads(path.read_text())
    return FusionRule(**obj.get("changepoint_rule", obj["rule"]))
