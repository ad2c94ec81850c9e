"""Every node's rows of a batch through each statistic at once (vectorised across nodes).

Each node has its own fit (:class:`~gateway.pipeline.windows.DetectorFit`: scaling, PCA
subspace, MSET memory, scales), but the statistics are the same arithmetic for every node. So a
batch's rows of all nodes are laid out as one array ``(nodes, rows, channels)`` (a node with
fewer rows is padded; padding is computed and thrown away), the nodes' fitted parameters as
arrays of the same leading axis (:class:`FitStack`), and standardisation, T²/Q, the MSET
residual, the autoencoder windows and the smoothing each run as one numpy operation for the
whole batch, instead of a few dozen small calls per node.

Padding is chosen so it changes nothing: a PCA basis padded with zero axes (their λ is 1)
adds exact zeros to T² and Q; an MSET memory padded with rows at infinite distance gets zero
kernel weight. Each node's smoothing runs over its own history and rows, as per node. So a
row's score is the per-node computation's (tests/unit/pipeline compare them, to float
rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tinymodels.gateway_features import FeatureConfig, window_errors

if TYPE_CHECKING:
    from gateway.pipeline.windows import DetectorFit, NodeStream, Prepared

FloatArray = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


class FitStack:
    """The fitted parameters of many nodes as stacked arrays, one slot per fit.

    Fits are registered on first use (a rebuild of the arrays, once per calibrated node); the
    stack keeps them, so it belongs to one model's streams and goes with them.
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self._slots: dict[int, int] = {}  # id(fit) -> slot
        self._fits: list[DetectorFit] = []
        empty: F64 = np.zeros(0)
        self.mean = self.sd = self.pmean = self.basis = self.lam = empty
        self.mem = self.mem_sq = self.width = empty
        self.scales: dict[str, npt.NDArray[np.float32]] = {}

    def __len__(self) -> int:
        return len(self._fits)

    def slots(self, fits: Sequence[DetectorFit]) -> npt.NDArray[np.intp]:
        new = [f for f in fits if id(f) not in self._slots]
        if new:
            for f in new:
                if id(f) not in self._slots:
                    self._slots[id(f)] = len(self._fits)
                    self._fits.append(f)
            self._rebuild()
        return np.fromiter((self._slots[id(f)] for f in fits), np.intp, len(fits))

    def _rebuild(self) -> None:
        fits = self._fits
        n = len(fits)
        self.mean = np.stack([f.standardiser.mean for f in fits])
        self.sd = np.stack([f.standardiser.sd for f in fits])
        d = len(self.cfg.model_channel_index)
        pcas = [f.pca for f in fits]
        if all(p is not None for p in pcas):
            kmax = max(p.basis.shape[1] for p in pcas if p is not None)
            self.pmean = np.zeros((n, d))
            self.basis = np.zeros((n, d, kmax))
            self.lam = np.ones((n, kmax))
            for i, p in enumerate(pcas):
                assert p is not None
                k = p.basis.shape[1]
                self.pmean[i], self.basis[i, :, :k], self.lam[i, :k] = p.mean, p.basis, p.lam
        msets = [f.mset for f in fits]
        if all(m is not None for m in msets):
            mmax = max(m.memory.shape[0] for m in msets if m is not None)
            self.mem = np.zeros((n, mmax, d))
            self.mem_sq = np.full((n, mmax), np.inf)
            self.width = np.zeros(n)
            for i, m in enumerate(msets):
                assert m is not None
                rows = m.memory.shape[0]
                self.mem[i, :rows], self.mem_sq[i, :rows], self.width[i] = (
                    m.memory,
                    m.memory_sq,
                    m.width,
                )
        self.scales = {
            name: np.asarray([f.scales[name] for f in fits], dtype=np.float32)
            for name in self.cfg.components
        }


def _pca(stack: FitStack, s: npt.NDArray[np.intp], x: F64) -> tuple[FloatArray, FloatArray]:
    """T² and Q of ``x`` (nodes, rows, d) for the fits in slots ``s``."""
    y = x - stack.pmean[s][:, None, :]
    basis = stack.basis[s]
    t = y @ basis
    t2 = np.sum(t**2 / stack.lam[s][:, None, :], axis=2)
    q = np.sum((y - t @ basis.transpose(0, 2, 1)) ** 2, axis=2)
    return t2.astype(np.float32), q.astype(np.float32)


def _mset(stack: FitStack, s: npt.NDArray[np.intp], x: F64) -> FloatArray:
    """The MSET residual of ``x`` (nodes, rows, d) for the fits in slots ``s``."""
    mem = stack.mem[s]
    d2 = np.sum(x**2, axis=2)[:, :, None] + stack.mem_sq[s][:, None, :]
    d2 = np.maximum(d2 - 2.0 * (x @ mem.transpose(0, 2, 1)), 0.0)
    k = np.exp(-(d2 - d2.min(axis=2, keepdims=True)) / stack.width[s][:, None, None])
    estimate = (k @ mem) / k.sum(axis=2, keepdims=True)
    return np.mean((x - estimate) ** 2, axis=2).astype(np.float32)


def _fit_slots(stack: FitStack, streams: Sequence[NodeStream]) -> npt.NDArray[np.intp]:
    """The stack slots of the (calibrated) streams' fits."""
    fits = []
    for st in streams:
        assert st.fit is not None
        fits.append(st.fit)
    return stack.slots(fits)


def _statistics(
    stack: FitStack, streams: Sequence[NodeStream], raw: F64
) -> tuple[npt.NDArray[np.intp], FloatArray, dict[str, FloatArray]]:
    """The streams' fit slots, the standardised model-channel rows (nodes, rows, d) of
    ``raw`` (nodes, rows, channels) and the T²/Q/MSET statistics (nodes, rows) the config
    asks for: the part of a batch both :func:`prepare_many` and :func:`score_many` do."""
    cfg = stack.cfg
    s = _fit_slots(stack, streams)
    z = np.clip((raw - stack.mean[s][:, None, :]) / stack.sd[s][:, None, :], -cfg.clip, cfg.clip)
    zm = z.astype(np.float32)[:, :, list(cfg.model_channel_index)]
    x = zm.astype(np.float64)
    stats: dict[str, FloatArray] = {}
    if "t2" in cfg.components or "q" in cfg.components:
        t2, q = _pca(stack, s, x)
        stats.update({k: v for k, v in (("t2", t2), ("q", q)) if k in cfg.components})
    if "mset" in cfg.components:
        stats["mset"] = _mset(stack, s, x)
    return s, zm, stats


def prepare_many(
    stack: FitStack, streams: Sequence[NodeStream], rest: Sequence[Sequence[tuple[float, ...]]]
) -> tuple[list[FloatArray], list[dict[str, FloatArray]], list[FloatArray]]:
    """Phase 1 for calibrated ``streams``, ``rest[i]`` the raw rows of ``streams[i]``.

    Returns per stream: its standardised model-channel rows, its raw statistics, its AE
    windows (empty without an AE), and advances each stream's window history.
    """
    cfg = stack.cfg
    counts = [len(r) for r in rest]
    nodes, rmax = len(streams), max(counts)
    raw = _raw_rows(rest, counts, rmax, len(cfg.channels), uniform=False)
    _, zm, stats = _statistics(stack, streams, raw)
    windows: list[FloatArray] = []
    if "ae" in cfg.components:
        w = cfg.window
        ext, all_windows = _windows(cfg, streams, zm)
        for i, st in enumerate(streams):
            windows.append(all_windows[i, : counts[i]])
            if w > 1:
                st.recent_z = ext[i, counts[i] : counts[i] + w - 1].copy()
    zms = [np.ascontiguousarray(zm[i, : counts[i]]) for i in range(nodes)]
    per_node = [{k: v[i, : counts[i]] for k, v in stats.items()} for i in range(nodes)]
    return zms, per_node, windows


def finish_many(stack: FitStack, prepared: Sequence[Prepared]) -> list[FloatArray]:
    """Phase 2 for ``prepared`` (each with its raw statistics, the AE's errors among them as
    ``"ae"``): smooth each
    statistic over the node's history, scale, combine; one score array per node."""
    cfg = stack.cfg
    streams = [p.stream for p in prepared]
    counts = [len(p.t_ms) for p in prepared]
    nodes, rmax, keep = len(prepared), max(counts), max(cfg.smooth_rows - 1, 0)
    s = _fit_slots(stack, streams)
    parts = []
    for name in cfg.components:
        ext = np.zeros((nodes, keep + rmax), dtype=np.float32)
        for i, p in enumerate(prepared):
            ext[i, :keep] = p.stream.history[name]
            ext[i, keep : keep + counts[i]] = p.stats[name]
            p.stream.history[name] = ext[i, counts[i] : counts[i] + keep].copy()
        # After calibration the history is full, so each row averages exactly smooth_rows
        # raw values, as in the batch scorer (the same cumulative sums per node).
        smoothed = _smoothed(ext, cfg.smooth_rows)
        parts.append((smoothed / stack.scales[name][s][:, None]).astype(np.float32))
    scores = _combined(cfg, parts)
    return [scores[i, : counts[i]] for i in range(nodes)]


def _tails(ext: np.ndarray, counts: npt.NDArray[np.intp], keep: int) -> np.ndarray:
    """Per node ``i``, ``ext[i, counts[i] : counts[i] + keep]`` as one array (nodes, keep, ...)."""
    first = int(counts[0])
    if (counts == first).all():  # the usual case: a slice, no gather
        return ext[:, first : first + keep]
    return ext[np.arange(len(counts))[:, None], counts[:, None] + np.arange(keep)]


def score_many(
    stack: FitStack,
    streams: Sequence[NodeStream],
    rest: Sequence[Sequence[tuple[float, ...]]],
    reconstruct: Callable[[FloatArray], FloatArray] | None,
) -> tuple[FloatArray, npt.NDArray[np.intp], FloatArray]:
    """:func:`prepare_many`, the AE and :func:`finish_many` in one pass, the statistics kept
    as (nodes, rows) arrays from start to end (no per-node split and re-stack).

    ``reconstruct`` runs the AE on every real row's window at once (None: the model has no
    AE); its input is the same windows, in the same order, as the per-node path's. Returns the
    scores (nodes, rows), the counts (row ``j`` of node ``i`` is real for ``j < counts[i]``)
    and the standardised model-channel rows (nodes, rows, d) for attribution. Each stream's
    window and smoothing history advance as with prepare_many/finish_many, and the scores are
    theirs: the same operations on the same values (tests/unit/pipeline).
    """
    cfg = stack.cfg
    counts = np.fromiter((len(r) for r in rest), np.intp, len(rest))
    rmax = int(counts.max())
    # None when every node has rmax rows; else which (node, row) cells are real.
    real = None if (counts == rmax).all() else np.arange(rmax)[None, :] < counts[:, None]
    raw = _raw_rows(rest, counts, rmax, len(cfg.channels), uniform=real is None)
    s, zm, stats = _statistics(stack, streams, raw)
    if "ae" in cfg.components:
        assert reconstruct is not None
        stats["ae"] = _ae_errors(cfg, streams, zm, counts, real=real, reconstruct=reconstruct)
    keep = max(cfg.smooth_rows - 1, 0)
    parts = []
    for name in cfg.components:
        ext = np.zeros((len(streams), keep + rmax), dtype=np.float32)
        if keep:
            ext[:, :keep] = np.stack([st.history[name] for st in streams])
        ext[:, keep:] = stats[name] if real is None else np.where(real, stats[name], 0)
        tails = _tails(ext, counts, keep).copy()
        for i, st in enumerate(streams):
            st.history[name] = tails[i]
        parts.append(
            (_smoothed(ext, cfg.smooth_rows) / stack.scales[name][s][:, None]).astype(np.float32)
        )
    return _combined(cfg, parts), counts, zm


def _raw_rows(
    rest: Sequence[Sequence[tuple[float, ...]]],
    counts: Sequence[int] | npt.NDArray[np.intp],
    rmax: int,
    channels: int,
    *,
    uniform: bool,
) -> F64:
    """Rows of node i at [i, :counts[i]]; the padding repeats a real row so nothing overflows."""
    if uniform:
        return np.array(rest, dtype=np.float64).reshape(len(rest), rmax, channels)
    raw = np.empty((len(rest), rmax, channels), dtype=np.float64)
    for i, rows in enumerate(rest):
        raw[i, : counts[i]] = rows
        raw[i, counts[i] :] = rows[0]
    return raw


def _ae_errors(
    cfg: FeatureConfig,
    streams: Sequence[NodeStream],
    zm: FloatArray,
    counts: npt.NDArray[np.intp],
    *,
    real: npt.NDArray[np.bool_] | None,
    reconstruct: Callable[[FloatArray], FloatArray],
) -> FloatArray:
    """The AE's error per (node, row) (0 on padding); advances each stream's window."""
    nodes, rmax = zm.shape[0], zm.shape[1]
    w = cfg.window
    ext, all_windows = _windows(cfg, streams, zm)
    if w > 1:
        recent = _tails(ext, counts, w - 1)
        for i, st in enumerate(streams):
            st.recent_z = recent[i]
    flat = all_windows.reshape(nodes * rmax, -1) if real is None else all_windows[real]
    flat = np.ascontiguousarray(flat)
    errors = window_errors(flat, reconstruct(flat))
    if real is None:
        return errors.reshape(nodes, rmax)
    out = np.zeros((nodes, rmax), dtype=np.float32)
    out[real] = errors
    return out


def _windows(
    cfg: FeatureConfig, streams: Sequence[NodeStream], zm: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Each stream's recent rows before its ``zm`` rows (nodes, w - 1 + rows, d), and every
    row's AE window (nodes, rows, w * d)."""
    ext = np.concatenate([np.stack([st.recent_z for st in streams]), zm], axis=1)
    view = np.lib.stride_tricks.sliding_window_view(ext, cfg.window, axis=1)  # (n, rows, d, w)
    return ext, view.transpose(0, 1, 3, 2).reshape(zm.shape[0], zm.shape[1], -1)


def _combined(cfg: FeatureConfig, parts: list[FloatArray]) -> FloatArray:
    """The scaled, smoothed statistics (nodes, rows) averaged into the score, in threshold
    units."""
    scores = np.mean(parts, axis=0).astype(np.float32)
    return (scores / np.float32(cfg.threshold_factor)).astype(np.float32)


def _smoothed(ext: FloatArray, rows: int) -> FloatArray:
    """Each row's mean over itself and the ``rows - 1`` before it (as in finish_many)."""
    if rows <= 1:
        return ext
    c = np.cumsum(np.concatenate([np.zeros((len(ext), 1)), ext.astype(np.float64)], 1), 1)
    return ((c[:, rows:] - c[:, : c.shape[1] - rows]) / rows).astype(np.float32)
