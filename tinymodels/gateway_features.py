"""Feature preparation for the gateway anomaly model (numpy only, shared by training and runtime).

A frame is ``(n_rows, n_channels)`` of raw readings. It is standardised with the mean and
standard deviation of its first ``fit_rows`` rows (SKAB lets a detector fit on those), with a
per-channel floor on the deviation so a channel that sat still during the fit part does not
explode. Each row then gets the window of the ``window`` rows ending at it (causal: the
gateway can score a row as soon as it arrives), flattened row-major to ``window * channels``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    channels: tuple[str, ...]
    window: int
    fit_rows: int
    std_floor: tuple[float, ...]
    clip: float
    smooth_rows: int
    threshold_quantile: float
    threshold_factor: float

    def to_json(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels),
            "window": self.window,
            "fit_rows": self.fit_rows,
            "std_floor": list(self.std_floor),
            "clip": self.clip,
            "smooth_rows": self.smooth_rows,
            "threshold_quantile": self.threshold_quantile,
            "threshold_factor": self.threshold_factor,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> FeatureConfig:
        return cls(
            channels=tuple(obj["channels"]),
            window=int(obj["window"]),
            fit_rows=int(obj["fit_rows"]),
            std_floor=tuple(float(v) for v in obj["std_floor"]),
            clip=float(obj["clip"]),
            smooth_rows=int(obj["smooth_rows"]),
            threshold_quantile=float(obj["threshold_quantile"]),
            threshold_factor=float(obj["threshold_factor"]),
        )


def standardise(
    frame: npt.ArrayLike, cfg: FeatureConfig, fit_rows: int | None = None
) -> FloatArray:
    """Scale each channel by the statistics of the first ``fit_rows`` rows, then clip."""
    x = np.asarray(frame, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(cfg.channels):
        raise ValueError(f"expected (n, {len(cfg.channels)}) frame, got {x.shape}")
    n_fit = min(fit_rows if fit_rows is not None else cfg.fit_rows, x.shape[0])
    if n_fit < 2:
        raise ValueError("need at least 2 fit rows to standardise a frame")
    mu = x[:n_fit].mean(axis=0)
    sd = np.maximum(x[:n_fit].std(axis=0), np.asarray(cfg.std_floor))
    return np.clip((x - mu) / sd, -cfg.clip, cfg.clip).astype(np.float32)


def causal_windows(z: FloatArray, window: int) -> FloatArray:
    """Row i -> rows ``i-window+1 .. i`` flattened; the first rows repeat row 0 as padding."""
    pad = np.concatenate([np.repeat(z[:1], window - 1, axis=0), z])
    idx = np.arange(z.shape[0])[:, None] + np.arange(window)[None, :]
    return pad[idx].reshape(z.shape[0], -1)


def window_errors(windows: FloatArray, reconstruction: FloatArray) -> FloatArray:
    """Mean squared reconstruction error per window."""
    return np.mean((reconstruction - windows) ** 2, axis=1).astype(np.float32)


def smooth(errors: FloatArray, rows: int) -> FloatArray:
    """Causal moving mean over ``rows`` rows (shorter at the start)."""
    if rows <= 1:
        return errors
    c = np.cumsum(np.concatenate([[0.0], errors.astype(np.float64)]))
    n = np.arange(1, errors.size + 1)
    lo = np.maximum(n - rows, 0)
    return ((c[n] - c[lo]) / (n - lo)).astype(np.float32)


def threshold_from_fit(scores: FloatArray, cfg: FeatureConfig, fit_rows: int) -> float:
    """Quantile of the fit part's scores (after the padded first window) times a factor."""
    start = min(cfg.window, max(fit_rows - 1, 0))
    ref = scores[start:fit_rows]
    return float(np.quantile(ref, cfg.threshold_quantile) * cfg.threshold_factor)
