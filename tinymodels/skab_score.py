"""The SKAB evaluation protocol: pointwise F1/FAR/MAR and NAB-style changepoint scores.

Implemented from the SKAB definitions (see ``../shared/data/README.md``):

* each file is its own task: fit on the first :data:`FIT_ROWS` rows, predict the rest;
* outlier detection is scored pointwise on the test rows, with TP/FP/TN/FN summed over
  files: ``F1 = TP / (TP + (FP + FN) / 2)``, ``FAR = FP / (FP + TN)``,
  ``MAR = FN / (FN + TP)``;
* changepoint detection is scored NAB-style. Predicted changepoints are the rows where the
  binary prediction changes (the first test row counts as a change when it predicts 1).
  Each true changepoint opens a window ``[t_cp, t_cp + 60 s]`` (a window that would
  overlap the previous one starts where the previous one ends). The first detection in a
  window scores on a tanh curve falling from ``A_tp`` at the window start to ``A_fp`` at
  its end; later detections in the same window are ignored; each detection outside every
  window costs ``A_fp``; each window without a detection costs ``A_fn``. Scores are
  summed over files and normalised ``100 (S - S_null) / (S_perfect - S_null)`` with
  ``S_null = windows * A_fn`` and ``S_perfect = windows * A_tp``.

The tanh curve is sampled at 1000 points across the window, as SKAB's reference scorer
does, so scores are comparable with the published leaderboard.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FIT_ROWS = 400
WINDOW_S = 60
_CURVE_POINTS = 1000


@dataclass(frozen=True, slots=True)
class NabProfile:
    name: str
    a_tp: float
    a_fp: float
    a_fn: float


STANDARD = NabProfile("standard", 1.0, -0.11, -1.0)
LOW_FP = NabProfile("lowfp", 1.0, -0.22, -1.0)
LOW_FN = NabProfile("lowfn", 1.0, -0.11, -2.0)
PROFILES: tuple[NabProfile, ...] = (STANDARD, LOW_FP, LOW_FN)


@dataclass(frozen=True, slots=True)
class PointCounts:
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def __add__(self, other: PointCounts) -> PointCounts:
        return PointCounts(
            self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn
        )

    @property
    def f1(self) -> float:
        denom = self.tp + (self.fp + self.fn) / 2
        return self.tp / denom if denom else 0.0

    @property
    def far(self) -> float:
        denom = self.fp + self.tn
        return self.fp / denom if denom else 0.0

    @property
    def mar(self) -> float:
        denom = self.fn + self.tp
        return self.fn / denom if denom else 0.0


@dataclass(frozen=True, slots=True)
class NabRaw:
    """Unnormalised NAB sums for one profile: score, null score, perfect score."""

    score: float = 0.0
    null: float = 0.0
    perfect: float = 0.0

    def __add__(self, other: NabRaw) -> NabRaw:
        return NabRaw(
            self.score + other.score, self.null + other.null, self.perfect + other.perfect
        )

    @property
    def normalised(self) -> float:
        span = self.perfect - self.null
        return 100.0 * (self.score - self.null) / span if span else 0.0


@dataclass(frozen=True, slots=True)
class FileScore:
    name: str
    counts: PointCounts
    nab: dict[str, NabRaw] = field(default_factory=dict)  # keyed by profile name


@dataclass(frozen=True, slots=True)
class Totals:
    counts: PointCounts
    nab: dict[str, NabRaw]

    @property
    def f1(self) -> float:
        return self.counts.f1

    @property
    def far(self) -> float:
        return self.counts.far

    @property
    def mar(self) -> float:
        return self.counts.mar

    def nab_score(self, profile: str) -> float:
        return self.nab[profile].normalised

    def result_line(self) -> str:
        """The one-line summary ``evaluate`` prints last."""
        return (
            f"RESULT skab f1={self.f1:.4f} far={self.far:.4f} mar={self.mar:.4f} "
            f"nab_standard={self.nab_score('standard'):.2f} "
            f"nab_lowfp={self.nab_score('lowfp'):.2f} nab_lowfn={self.nab_score('lowfn'):.2f}"
        )


def point_counts(truth: npt.ArrayLike, prediction: npt.ArrayLike) -> PointCounts:
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(prediction, dtype=bool)
    if t.shape != p.shape:
        raise ValueError(f"truth {t.shape} and prediction {p.shape} differ in shape")
    return PointCounts(
        tp=int(np.sum(t & p)),
        fp=int(np.sum(~t & p)),
        tn=int(np.sum(~t & ~p)),
        fn=int(np.sum(t & ~p)),
    )


def changepoints_from_prediction(prediction: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Rows where the binary prediction changes; row 0 counts when it predicts 1."""
    p = np.asarray(prediction, dtype=np.int8)
    cp = np.zeros(p.shape, dtype=bool)
    if p.size:
        cp[0] = p[0] != 0
        cp[1:] = p[1:] != p[:-1]
    return cp


def detection_windows(
    t_s: npt.ArrayLike, true_changepoint: npt.ArrayLike, window_s: float = WINDOW_S
) -> list[tuple[float, float]]:
    """``[t_cp, t_cp + window_s]`` per true changepoint; overlaps cut the later window."""
    t = np.asarray(t_s, dtype=np.float64)
    starts = t[np.asarray(true_changepoint, dtype=bool)]
    windows = [(float(s), float(s) + window_s) for s in starts]
    for i in range(len(windows) - 1):
        if windows[i][1] >= windows[i + 1][0]:
            windows[i + 1] = (windows[i][1], windows[i + 1][1])
    return windows


def tp_reward(relative_position: float, profile: NabProfile) -> float:
    """Score of the first detection at ``relative_position`` (0 = window start, 1 = end)."""
    event = min(int(relative_position * _CURVE_POINTS), _CURVE_POINTS - 1)
    x = -math.pi / 2 + event * math.pi / (_CURVE_POINTS - 1)
    half = (profile.a_tp - profile.a_fp) / 2
    return -half * math.tanh(x) / math.tanh(math.pi / 2) + half + profile.a_fp


def nab_raw(
    t_s: npt.ArrayLike,
    true_changepoint: npt.ArrayLike,
    predicted_changepoint: npt.ArrayLike,
    profile: NabProfile,
    window_s: float = WINDOW_S,
) -> NabRaw:
    """NAB sums for one file and one profile (not yet normalised)."""
    t = np.asarray(t_s, dtype=np.float64)
    detections = np.sort(t[np.asarray(predicted_changepoint, dtype=bool)])
    windows = detection_windows(t, true_changepoint, window_s)
    in_any_window = np.zeros(detections.shape, dtype=bool)
    score = 0.0
    for start, end in windows:
        inside = (detections >= start) & (detections <= end)
        in_any_window |= inside
        if not inside.any():
            score += profile.a_fn
            continue
        first = float(detections[inside][0])
        rel = (first - start) / (end - start) if end > start else 0.0
        score += tp_reward(rel, profile)
    score += profile.a_fp * int(np.sum(~in_any_window))
    return NabRaw(
        score=score, null=len(windows) * profile.a_fn, perfect=len(windows) * profile.a_tp
    )


def score_file(
    name: str,
    t_s: npt.ArrayLike,
    anomaly: npt.ArrayLike,
    changepoint: npt.ArrayLike,
    prediction: npt.ArrayLike,
    *,
    profiles: Sequence[NabProfile] = PROFILES,
) -> FileScore:
    """Score one file's test rows (the caller has already dropped the fit rows)."""
    pred = np.asarray(prediction, dtype=bool)
    pred_cp = changepoints_from_prediction(pred)
    return FileScore(
        name=name,
        counts=point_counts(anomaly, pred),
        nab={p.name: nab_raw(t_s, changepoint, pred_cp, p) for p in profiles},
    )


def summarise(scores: Iterable[FileScore]) -> Totals:
    """Sum counts and NAB sums over files (SKAB's corpus-level totals)."""
    counts = PointCounts()
    nab: dict[str, NabRaw] = {}
    for s in scores:
        counts = counts + s.counts
        for key, raw in s.nab.items():
            nab[key] = nab.get(key, NabRaw()) + raw
    return Totals(counts=counts, nab=nab)
