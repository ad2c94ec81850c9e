"""Feature preparation and scoring for the gateway anomaly detector (numpy only).

Shared by training (:mod:`tinymodels.train_gateway`) and the runtime (:mod:`tinymodels.runtime`).

A frame is ``(n_rows, n_channels)`` of raw readings. It is standardised with the mean and
standard deviation of its first ``fit_rows`` rows (SKAB lets a detector fit on those), with a
per-channel floor on the deviation so a channel that sat still during the fit part does not
explode. The detector then looks only at ``model_channels``: the temperatures are left out
because they drift by themselves over an experiment (they move about 1 fit-part standard
deviation *within* the 400 fit rows, the other channels about 0.1-0.4), so their level after
the fit part says more about the clock than about the pump.

Three per-row statistics, each fitted on the frame's own fit rows only:

* ``ae``: reconstruction error of the int8 autoencoder on the causal window of ``window``
  rows ending at the row (the only part that needs LiteRT; computed by the runtime);
* ``t2``: Hotelling's T² in the principal subspace of the fit rows (PCA keeping
  ``pca_variance`` of the variance);
* ``q``: the squared residual outside that subspace (SPE / Q statistic);
* ``mset``: an MSET-like similarity estimate: each row is rebuilt as a kernel-weighted mean
  of "memory" rows picked from the fit part; the score is the mean squared residual.

Each statistic is smoothed (causal moving mean over ``smooth_rows``) and divided by its
``threshold_quantile`` over the fit part, so 1.0 means "as high as the worst of normal". The
frame score is the mean of the chosen ``components``; a row is anomalous when the score
exceeds ``threshold_factor`` and the decision has held for ``hold_on`` rows (and clears after
``hold_off`` rows below), which stops single-row flicker from opening and closing alarms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

COMPONENTS = ("ae", "t2", "q", "mset")


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
    # Defaults keep manifests written before the ensemble (AE only, all channels) loadable
    # with the same predictions.
    model_channels: tuple[str, ...] | None = None
    components: tuple[str, ...] = ("ae",)
    pca_variance: float = 0.9
    mset_memory: int = 80
    hold_on: int = 1
    hold_off: int = 1

    def __post_init__(self) -> None:
        unknown = [c for c in self.components if c not in COMPONENTS]
        if unknown or not self.components:
            raise ValueError(f"components must be a non-empty subset of {COMPONENTS}")
        missing = [c for c in self.model_channels or () if c not in self.channels]
        if missing:
            raise ValueError(f"model_channels {missing} are not among channels")
        if self.hold_on < 1 or self.hold_off < 1:
            raise ValueError("hold_on and hold_off must be >= 1")

    @property
    def model_channel_index(self) -> tuple[int, ...]:
        chosen = self.model_channels if self.model_channels is not None else self.channels
        return tuple(self.channels.index(c) for c in chosen)

    @property
    def model_inputs(self) -> int:
        return self.window * len(self.model_channel_index)

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
            "model_channels": None if self.model_channels is None else list(self.model_channels),
            "components": list(self.components),
            "pca_variance": self.pca_variance,
            "mset_memory": self.mset_memory,
            "hold_on": self.hold_on,
            "hold_off": self.hold_off,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> FeatureConfig:
        mc = obj.get("model_channels")
        return cls(
            channels=tuple(obj["channels"]),
            window=int(obj["window"]),
            fit_rows=int(obj["fit_rows"]),
            std_floor=tuple(float(v) for v in obj["std_floor"]),
            clip=float(obj["clip"]),
            smooth_rows=int(obj["smooth_rows"]),
            threshold_quantile=float(obj["threshold_quantile"]),
            threshold_factor=float(obj["threshold_factor"]),
            model_channels=None if mc is None else tuple(mc),
            components=tuple(obj.get("components", ("ae",))),
            pca_variance=float(obj.get("pca_variance", 0.9)),
            mset_memory=int(obj.get("mset_memory", 80)),
            hold_on=int(obj.get("hold_on", 1)),
            hold_off=int(obj.get("hold_off", 1)),
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
    return Standardiser.fit(x[:n_fit], cfg).apply(x)


@dataclass(frozen=True, slots=True)
class Standardiser:
    """The per-channel scaling :func:`standardise` fits, kept to apply to later rows."""

    mean: npt.NDArray[np.float64]
    sd: npt.NDArray[np.float64]
    clip: float

    @classmethod
    def fit(cls, fit: npt.ArrayLike, cfg: FeatureConfig) -> Standardiser:
        x = np.asarray(fit, dtype=np.float64)
        sd = np.maximum(x.std(axis=0), np.asarray(cfg.std_floor))
        return cls(mean=x.mean(axis=0), sd=sd, clip=cfg.clip)

    def apply(self, rows: npt.ArrayLike) -> FloatArray:
        x = np.asarray(rows, dtype=np.float64)
        return np.clip((x - self.mean) / self.sd, -self.clip, self.clip).astype(np.float32)


def select_model_channels(z: FloatArray, cfg: FeatureConfig) -> FloatArray:
    """The standardised columns the detector looks at (``model_channels``)."""
    return np.ascontiguousarray(z[:, list(cfg.model_channel_index)])


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


def pca_statistics(z: FloatArray, fit_rows: int, variance: float) -> tuple[FloatArray, FloatArray]:
    """Hotelling T² and Q (squared prediction error) per row, PCA fitted on the fit rows."""
    x = np.asarray(z, dtype=np.float64)
    return PcaFit.fit(x[:fit_rows], variance).apply(x)


@dataclass(frozen=True, slots=True)
class PcaFit:
    """The principal subspace of the fit rows; :meth:`apply` gives T² and Q for any rows."""

    mean: npt.NDArray[np.float64]
    basis: npt.NDArray[np.float64]
    lam: npt.NDArray[np.float64]

    @classmethod
    def fit(cls, fit_rows: npt.ArrayLike, variance: float) -> PcaFit:
        fit = np.asarray(fit_rows, dtype=np.float64)
        mu = fit.mean(axis=0)
        cov = np.cov((fit - mu).T) if fit.shape[0] > 1 else np.eye(fit.shape[1])
        eigval, eigvec = np.linalg.eigh(np.atleast_2d(cov))
        order = np.argsort(eigval)[::-1]
        eigval, eigvec = np.maximum(eigval[order], 0.0), eigvec[:, order]
        total = float(eigval.sum())
        k = 1 if total <= 0 else int(np.searchsorted(np.cumsum(eigval) / total, variance) + 1)
        # At least one axis stays outside the subspace so Q is not identically zero.
        k = max(1, min(k, fit.shape[1] - 1)) if fit.shape[1] > 1 else 1
        return cls(mean=mu, basis=eigvec[:, :k], lam=np.maximum(eigval[:k], 1e-6))

    def apply(self, rows: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """(T², Q) per row."""
        y = np.asarray(rows, dtype=np.float64) - self.mean
        t = y @ self.basis
        t2 = np.sum(t**2 / self.lam, axis=1)
        q = np.sum((y - t @ self.basis.T) ** 2, axis=1)
        return t2.astype(np.float32), q.astype(np.float32)


def mset_residual(z: FloatArray, fit_rows: int, memory: int) -> FloatArray:
    """Mean squared residual of a kernel-regression (MSET-like) estimate from fit-part states.

    The memory holds the rows where each channel is at its fit-part minimum or maximum (so
    the normal envelope is covered) plus ``memory`` evenly spaced fit rows. The Gaussian
    kernel width is the median squared distance between fit rows and memory rows.
    """
    x = np.asarray(z, dtype=np.float64)
    return MsetFit.fit(x[:fit_rows], memory).apply(x)


@dataclass(frozen=True, slots=True)
class MsetFit:
    """The memory rows and kernel width :func:`mset_residual` fits; :meth:`apply` scores rows."""

    memory: npt.NDArray[np.float64]
    memory_sq: npt.NDArray[np.float64]
    width: float

    @classmethod
    def fit(cls, fit_rows: npt.ArrayLike, memory: int) -> MsetFit:
        fit = np.asarray(fit_rows, dtype=np.float64)
        picks = set(np.argmin(fit, axis=0).tolist()) | set(np.argmax(fit, axis=0).tolist())
        picks |= set(np.linspace(0, fit.shape[0] - 1, memory).astype(int).tolist())
        mem = fit[sorted(picks)]
        partial = cls(memory=mem, memory_sq=np.sum(mem**2, axis=1), width=1.0)
        width = max(float(np.median(partial._sqdist(fit))), 1e-6)
        return cls(memory=mem, memory_sq=partial.memory_sq, width=width)

    def _sqdist(self, a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        d = np.sum(a**2, axis=1)[:, None] + self.memory_sq[None, :] - 2.0 * (a @ self.memory.T)
        return np.maximum(d, 0.0)

    def apply(self, rows: npt.ArrayLike) -> FloatArray:
        """Mean squared residual per row."""
        x = np.asarray(rows, dtype=np.float64)
        return np.mean((x - self.estimate(x)) ** 2, axis=1).astype(np.float32)

    def estimate(self, rows: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Each row rebuilt from the memory (kernel-weighted mean of memory rows)."""
        x = np.asarray(rows, dtype=np.float64)
        d2 = self._sqdist(x)
        # Subtracting each row's nearest distance keeps exp() away from underflow far from normal.
        k = np.exp(-(d2 - d2.min(axis=1, keepdims=True)) / self.width)
        return np.asarray((k @ self.memory) / k.sum(axis=1, keepdims=True))


def normalise_by_fit(scores: FloatArray, cfg: FeatureConfig, fit_rows: int) -> FloatArray:
    """Scores as multiples of their ``threshold_quantile`` over the fit part."""
    return (scores / fit_scale(scores, cfg, fit_rows)).astype(np.float32)


def fit_scale(scores: FloatArray, cfg: FeatureConfig, fit_rows: int) -> float:
    """What :func:`normalise_by_fit` divides by: the fit part's ``threshold_quantile`` (> 0)."""
    start = min(cfg.window, max(fit_rows - 1, 0))
    ref = scores[start:fit_rows]
    scale = float(np.quantile(ref, cfg.threshold_quantile)) if ref.size else 1.0
    return max(scale, 1e-9)


def threshold_from_fit(scores: FloatArray, cfg: FeatureConfig, fit_rows: int) -> float:
    """Quantile of the fit part's scores (after the padded first window) times a factor."""
    start = min(cfg.window, max(fit_rows - 1, 0))
    ref = scores[start:fit_rows]
    return float(np.quantile(ref, cfg.threshold_quantile) * cfg.threshold_factor)


def debounce(raw: npt.ArrayLike, hold_on: int, hold_off: int) -> BoolArray:
    """Alarm once ``hold_on`` consecutive rows are above; clear after ``hold_off`` below.

    Causal: row i's decision uses rows up to i only.
    """
    above = np.asarray(raw, dtype=bool)
    out = np.zeros(above.shape, dtype=bool)
    state = False
    run = 0
    for i, v in enumerate(above.tolist()):
        if v != state:
            run += 1
            if run >= (hold_on if v else hold_off):
                state = v
                run = 0
        else:
            run = 0
        out[i] = state
    return out


def statistic_scores(
    z_model: FloatArray, cfg: FeatureConfig, fit_rows: int
) -> dict[str, FloatArray]:
    """The raw (unsmoothed) numpy statistics among ``cfg.components`` (everything but ``ae``)."""
    out: dict[str, FloatArray] = {}
    if "t2" in cfg.components or "q" in cfg.components:
        t2, q = pca_statistics(z_model, fit_rows, cfg.pca_variance)
        out.update({k: v for k, v in (("t2", t2), ("q", q)) if k in cfg.components})
    if "mset" in cfg.components:
        out["mset"] = mset_residual(z_model, fit_rows, cfg.mset_memory)
    return out


def combine(raw: dict[str, FloatArray], cfg: FeatureConfig, fit_rows: int) -> FloatArray:
    """Smooth each statistic, express it in fit-part units, average over the components."""
    parts = [
        normalise_by_fit(smooth(raw[name], cfg.smooth_rows), cfg, fit_rows)
        for name in cfg.components
    ]
    return np.mean(parts, axis=0).astype(np.float32)
