"""Per-node streaming state: a calibration baseline, then scores row by row.

The batch scorer (:meth:`tinymodels.runtime.GatewayModel.score_frame`) fits everything on a
frame's first ``fit_rows`` rows and scores the whole frame at once. Streaming does the same in
two phases per node (one node = one machine):

1. **Calibration**: the node's first ``calibration_rows`` rows are kept as its baseline. When
   the baseline is full, the statistics are fitted on it exactly as the batch scorer fits them
   on a frame's fit part (standardisation, PCA subspace, MSET memory, and each statistic's
   ``threshold_quantile`` over the baseline), using the same tinymodels code.
2. **Scoring**: each later row is standardised with the baseline's scaling, the autoencoder
   sees the causal window of the last ``window`` rows, T²/Q and the MSET residual are applied
   with the fitted objects, each statistic is smoothed over the last ``smooth_rows`` raw
   values (the history carries over from the baseline), divided by its baseline scale, and
   the components are averaged. A row's score therefore equals the batch scorer's score for
   the same row of ``baseline + rows`` (up to float rounding; tests check it).

Scores are reported in threshold units: divided by the manifest's ``threshold_factor``, so
``>= 1.0`` means anomalous for this model (:class:`gateway.events.AnomalyScore`).

Rows arrive with node wall time; a node's reboot does not reset its state (the machine is the
same). Nothing here is thread-safe: the scorer's one worker thread owns every stream.
"""

from __future__ import annotations

import json
import operator
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from gateway.pipeline.stacked import FitStack, finish_many, prepare_many
from gateway.protocol.messages import Channel
from tinymodels.attribution import row_shares
from tinymodels.gateway_features import (
    FeatureConfig,
    MsetFit,
    PcaFit,
    Standardiser,
    causal_windows,
    fit_scale,
    smooth,
    window_errors,
)
from tinymodels.runtime import GatewayModel

FloatArray = npt.NDArray[np.float32]


class Row(NamedTuple):
    """One committed sample of a node, its values in the model's channel order (a named
    tuple: one is made per committed sample, on the event loop)."""

    node_id: str
    t_ms: int
    values: tuple[float, ...]
    # What the values mean (ChannelMapper.layout); "" when unknown: such a baseline is never
    # stored, since nothing could tell later whether it still applies.
    layout: str = ""


class ChannelMapper:
    """Turns a node's samples into model-channel rows (see :mod:`gateway.pipeline.config`).

    The column plan is cached per channel tuple, so the per-sample cost is one tuple build.
    """

    def __init__(
        self,
        cfg: FeatureConfig,
        channel_map: Mapping[str, str],
        missing: Literal["baseline", "skip"],
    ) -> None:
        self._cfg = cfg
        self._map = dict(channel_map)
        self._missing = missing
        self._plans: dict[tuple[Channel, ...], tuple[int, ...] | None] = {}
        self._layouts: dict[tuple[Channel, ...], str] = {}

    def plan(self, channels: tuple[Channel, ...]) -> tuple[int, ...] | None:
        """For each model channel, the sample column that feeds it (-1: held at baseline).

        None when the node cannot be scored: no channel maps, or ``missing="skip"`` and a
        model input channel is missing.
        """
        try:
            return self._plans[channels]
        except KeyError:
            pass
        source: dict[str, int] = {}
        for col, ch in enumerate(channels):
            target = self._map.get(ch.name)
            # The first node channel mapping to a model channel wins (a node sending both
            # "vib_rms" and "vib_rms_1" feeds Accelerometer1RMS from the first of them).
            if target is not None and target not in source:
                source[target] = col
        plan: tuple[int, ...] | None = tuple(source.get(name, -1) for name in self._cfg.channels)
        inputs = [self._cfg.channels[i] for i in self._cfg.model_channel_index]
        if not any(name in source for name in inputs) or (
            self._missing == "skip" and any(name not in source for name in inputs)
        ):
            plan = None
        self._plans[channels] = plan
        return plan

    def layout(self, channels: tuple[Channel, ...]) -> str:
        """What rows mapped from ``channels`` mean: the model's channels and the node channel
        that feeds each (null: held at baseline), as compact JSON.

        A baseline recorded under one layout is only valid under the same layout: another
        channel map, or a node that gained or renamed a channel, gives rows another meaning.
        """
        try:
            return self._layouts[channels]
        except KeyError:
            pass
        plan = self.plan(channels)
        feeds = [channels[c].name if c >= 0 else None for c in plan] if plan is not None else []
        text = json.dumps(
            {"channels": list(self._cfg.channels), "feeds": feeds}, separators=(",", ":")
        )
        self._layouts[channels] = text
        return text

    @staticmethod
    def row(plan: tuple[int, ...], values: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(values[c] if c >= 0 else 0.0 for c in plan)

    @staticmethod
    def row_getter(plan: tuple[int, ...]) -> Callable[[tuple[float, ...]], tuple[float, ...]]:
        """:meth:`row` for one plan as one C call per sample: the sample's values with a 0.0
        appended, which column -1 (held at baseline) then picks."""
        if len(plan) == 1:
            only = plan[0]
            return lambda values: ((*values, 0.0)[only],)
        pick = operator.itemgetter(*plan)
        return lambda values: pick((*values, 0.0))


@dataclass(frozen=True, slots=True)
class DetectorFit:
    """Everything fitted on one node's baseline for one model."""

    standardiser: Standardiser
    pca: PcaFit | None
    mset: MsetFit | None
    scales: dict[str, float]  # per component: its threshold_quantile over the baseline


class Prepared:
    """A node's rows between the two scoring phases (the AE runs batched across nodes)."""

    __slots__ = ("_shares", "stats", "stream", "t_ms", "windows", "zm")

    def __init__(
        self,
        stream: NodeStream,
        t_ms: list[int],
        windows: FloatArray,
        stats: dict[str, FloatArray],
        zm: FloatArray,
    ) -> None:
        self.stream = stream
        self.t_ms = t_ms
        self.windows = windows  # (n, window * model channels), empty when the model has no AE
        self.stats = stats  # raw numpy statistics per row ("ae" once the model has run)
        self.zm = zm  # the rows' standardised model channels
        self._shares: npt.NDArray[np.float64] | None = None

    @property
    def shares(self) -> npt.NDArray[np.float64] | None:
        """Per row, each model channel's share of T² and the MSET residual
        (tinymodels.attribution); worked out on first use (only a score that could alert
        needs it)."""
        fit = self.stream.fit
        if self._shares is None and fit is not None:
            self._shares = row_shares(fit.pca, fit.mset, self.zm)
        return self._shares


@dataclass
class NodeStream:
    """One node's state for one model. Feed rows with :meth:`prepare` then :meth:`finish`
    (one node), or :meth:`take` then :func:`gateway.pipeline.stacked.prepare_many` (many)."""

    node_id: str
    cfg: FeatureConfig
    calibration_rows: int
    baseline: list[tuple[float, ...]] = field(default_factory=list)
    fit: DetectorFit | None = None
    # The layout of every baseline row ("" if unknown or mixed: such a baseline is not stored).
    layout: str = ""
    # The baseline came from the baseline store (so it is not written back).
    restored: bool = False
    # The last window-1 standardised model-channel rows, and per statistic the last
    # smooth_rows-1 raw values: exactly what the next row's window and smoothing need.
    recent_z: FloatArray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    history: dict[str, FloatArray] = field(default_factory=dict)
    # Raw rows since calibration (at most window + smooth_rows of them): enough to rebuild the
    # histories for another model.
    recent_rows: deque[tuple[float, ...]] = field(default_factory=deque)
    _stack: FitStack | None = None  # this node's fit alone, for prepare/finish

    @property
    def calibrated(self) -> bool:
        return self.fit is not None

    def take(self, model: GatewayModel, rows: Sequence[Row]) -> Sequence[Row]:
        """Calibrate on the first rows if the baseline is not full yet (those are not scored);
        return the rows left to score, remembered as the recent rows."""
        i = 0
        while self.fit is None and i < len(rows):
            take = min(self.calibration_rows - len(self.baseline), len(rows) - i)
            if not self.baseline and take:
                self.layout = rows[i].layout
            if self.layout and any(r.layout != self.layout for r in rows[i : i + take]):
                self.layout = ""
            self.baseline.extend(r.values for r in rows[i : i + take])
            i += take
            if len(self.baseline) >= self.calibration_rows:
                self._calibrate(model)
        rest = rows[i:] if i else rows
        if rest:
            self.recent_rows.extend(r.values for r in rest)
            excess = len(self.recent_rows) - (self.cfg.window + self.cfg.smooth_rows)
            for _ in range(max(excess, 0)):
                self.recent_rows.popleft()
        return rest

    def prepare(self, model: GatewayModel, rows: Sequence[Row]) -> Prepared | None:
        """Phase 1: calibrate if the baseline fills up, then window and apply the statistics.

        Rows that go into the baseline are not scored. Returns None when no row is left to
        score.
        """
        rest = self.take(model, rows)
        if not rest:
            return None
        stack = self._own_stack()
        zms, stats, windows = prepare_many(stack, [self], [[r.values for r in rest]])
        empty = np.zeros((0, 0), dtype=np.float32)
        return Prepared(self, [r.t_ms for r in rest], windows[0] if windows else empty,
                        stats[0], zms[0])  # fmt: skip

    def finish(self, prepared: Prepared, ae_errors: FloatArray | None) -> FloatArray:
        """Phase 2: smooth, scale and combine; one score per prepared row, threshold units."""
        if ae_errors is not None:
            prepared.stats["ae"] = ae_errors
        return finish_many(self._own_stack(), [prepared])[0]

    def _own_stack(self) -> FitStack:
        if self._stack is None:
            self._stack = FitStack(self.cfg)
        return self._stack

    def _model_columns(self, z: FloatArray) -> FloatArray:
        return np.ascontiguousarray(z[:, list(self.cfg.model_channel_index)])

    def _calibrate(self, model: GatewayModel) -> None:
        cfg = self.cfg
        base = np.asarray(self.baseline, dtype=np.float64)
        standardiser = Standardiser.fit(base, cfg)
        zm = self._model_columns(standardiser.apply(base))
        pca = PcaFit.fit(zm, cfg.pca_variance) if {"t2", "q"} & set(cfg.components) else None
        mset = MsetFit.fit(zm, cfg.mset_memory) if "mset" in cfg.components else None
        raw: dict[str, FloatArray] = {}
        if pca is not None:
            t2, q = pca.apply(zm)
            raw.update({k: v for k, v in (("t2", t2), ("q", q)) if k in cfg.components})
        if mset is not None:
            raw["mset"] = mset.apply(zm)
        if "ae" in cfg.components:
            windows = causal_windows(zm, cfg.window)
            raw["ae"] = window_errors(windows, model.predict_batched(windows))
        n = base.shape[0]
        scales = {k: fit_scale(smooth(v, cfg.smooth_rows), cfg, n) for k, v in raw.items()}
        self.fit = DetectorFit(standardiser, pca, mset, scales)
        keep_z = max(cfg.window - 1, 0)
        self.recent_z = np.array(zm[n - keep_z :] if keep_z else zm[:0], dtype=np.float32)
        keep = max(cfg.smooth_rows - 1, 0)
        self.history = {
            k: np.array(v[n - keep :] if keep else v[:0], dtype=np.float32) for k, v in raw.items()
        }
        self.recent_rows = deque()

    def rebuilt_for(self, model: GatewayModel) -> NodeStream:
        """This node's state for another model: refitted on the same baseline, then the recent
        rows replayed so windows and smoothing carry on without a new calibration."""
        cfg = model.feature_config
        assert cfg is not None
        fresh = NodeStream(
            self.node_id, cfg, self.calibration_rows, layout=self.layout, restored=self.restored
        )
        if not self.calibrated:
            fresh.baseline = list(self.baseline)
            return fresh
        fresh.baseline = list(self.baseline)
        fresh._calibrate(model)
        # The refit leaves histories at the baseline's tail; replaying the rows since then
        # brings them to where this stream is.
        if self.recent_rows:
            prepared = fresh.prepare(model, [Row(self.node_id, 0, v) for v in self.recent_rows])
            if prepared is not None:
                ae = (
                    window_errors(prepared.windows, model.predict_batched(prepared.windows))
                    if "ae" in cfg.components
                    else None
                )
                fresh.finish(prepared, ae)
        return fresh
