"""Scoring SKAB files with the node model, as a node would, and the int8-vs-float gap.

A node scores each row from the window ending at it; the gateway (or this evaluation) smooths
that score over :data:`SMOOTH_ROWS` rows and divides by the manifest's threshold, so 1.0 means
"as high as the 0.99 quantile of normal windows". The standalone node detector alarms above
1.0 with the same hold as the gateway detector (:data:`HOLD_ON`/:data:`HOLD_OFF` rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tinymodels.gateway_features import debounce, smooth
from tinymodels.node_window import NodeWindowConfig, select, standardise, windows
from tinymodels.runtime import ARTIFACTS_DIR, GatewayModel, load_model
from tinymodels.skab_data import CHANNELS, SkabFile
from tinymodels.skab_score import FIT_ROWS, FileScore, score_file, summarise

DEFAULT_NODE_MODEL = ARTIFACTS_DIR / "node_window_model.tflite"
SMOOTH_ROWS = 5
HOLD_ON = 10
HOLD_OFF = 30
QUANTILE = 0.99

FloatArray = npt.NDArray[np.float32]


def node_inputs(f: SkabFile, cfg: NodeWindowConfig) -> FloatArray:
    """The model input for every row of a file (windows of the node-standardised channels)."""
    return windows(standardise(select(f.values, CHANNELS, cfg), cfg, FIT_ROWS), cfg.window)


def node_scores(raw: FloatArray, cfg: NodeWindowConfig) -> FloatArray:
    """Raw per-row model outputs -> smoothed, in threshold units.

    Like the gateway's statistics, the unit is the file's own: the :data:`QUANTILE` of the
    smoothed score over its fit rows (after the first window), so each machine is judged
    against its own normal. (The manifest's fixed ``threshold``, the same quantile over all
    training windows, is the fallback before a node has a baseline; it is about 3x too
    high for a quiet machine, so alone it misses most anomalies.)
    """
    s = smooth(np.asarray(raw, np.float32), SMOOTH_ROWS)
    ref = s[cfg.window : FIT_ROWS]
    scale = float(np.quantile(ref, QUANTILE)) if ref.size else cfg.threshold
    return (s / max(scale, 1e-9)).astype(np.float32)


def node_predictions(scores: FloatArray) -> npt.NDArray[np.bool_]:
    return debounce(scores > 1.0, HOLD_ON, HOLD_OFF)


class NodeModel:
    """The shipped node model run with LiteRT (bit-close to TFLM) plus its feature config."""

    def __init__(self, path: Path = DEFAULT_NODE_MODEL) -> None:
        self.lite: GatewayModel = load_model(path, delegates=False)
        self.cfg = NodeWindowConfig.from_manifest(self.lite.manifest)

    @property
    def manifest(self) -> dict[str, Any]:
        return self.lite.manifest

    def scores(self, f: SkabFile) -> FloatArray:
        return node_scores(self.lite.predict_batched(node_inputs(f, self.cfg))[:, 0], self.cfg)


def score_rows(f: SkabFile, pred: npt.ArrayLike) -> FileScore:
    assert f.anomaly is not None
    assert f.changepoint is not None
    p = np.asarray(pred, dtype=bool)
    return score_file(
        f.name, f.t_s[FIT_ROWS:], f.anomaly[FIT_ROWS:], f.changepoint[FIT_ROWS:], p[FIT_ROWS:]
    )


def skab_gap(
    tflite: bytes,
    cfg: NodeWindowConfig,
    files: list[SkabFile],
    *,
    mean: npt.ArrayLike,
    axes: npt.ArrayLike,
    lam: npt.ArrayLike,
) -> dict[str, Any]:
    """SKAB protocol scores of the int8 model and of its float original, and the F1 gap."""
    from tinymodels.train_node_window import float_scores

    lite = GatewayModel(tflite, {"name": "node"}, delegates=False)
    q_scores, f_scores = [], []
    for f in files:
        x = node_inputs(f, cfg)
        q_scores.append(
            score_rows(f, node_predictions(node_scores(lite.predict_batched(x)[:, 0], cfg)))
        )
        f_scores.append(
            score_rows(f, node_predictions(node_scores(float_scores(x, mean, axes, lam), cfg)))
        )
    q, fl = summarise(q_scores), summarise(f_scores)
    return {
        "data": f"SKAB protocol on {len(files)} labelled files (fit rows 0..399, score the rest)",
        "int8": _brief(q),
        "float": _brief(fl),
        "f1_gap": round(fl.f1 - q.f1, 4),
    }


def _brief(t: Any) -> dict[str, float]:
    return {
        "f1": round(t.f1, 4),
        "far": round(t.far, 4),
        "mar": round(t.mar, 4),
        "nab_standard": round(t.nab_score("standard"), 2),
    }
