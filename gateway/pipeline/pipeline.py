"""The scoring pipeline: committed journal data in, observations out.

``ScoringPipeline.on_commit`` is the journal writer's listener (called on the event loop after
every commit, must not block). For each newly committed message it emits, synchronously and in
commit order:

* a :class:`ChannelReading` per sample and channel (what channel-threshold rules need; this is
  the cheap, latency-critical path);
* a :class:`NodeHealth` per Status;
* a :class:`GapObserved` per node whose messages the journal gave up on in this commit;
* an :class:`AnomalyScore` (``source=node``) per NodeInference, plus a :class:`Disagreement`
  when the fusion rule fires;

and queues the samples, mapped to the model's channels, for the scoring worker, which later
emits :class:`AnomalyScore` (``source=gateway``; ``source=shadow`` in shadow mode) and any
resulting :class:`Disagreement`.

Duplicates are not observed twice: envelopes the journal found to be pure duplicates are
skipped, and per (node, boot) only samples with a seq above the highest already seen are
used (a late, out-of-order sample is counted in ``late_samples`` and not observed: windows
need order).

Observations go to the sinks added with :meth:`ScoringPipeline.add_sink`, in batches, on the
event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

from gateway.errors import ModelError
from gateway.events import (
    AnomalyScore,
    ChannelReading,
    GapObserved,
    NodeHealth,
    Observation,
)
from gateway.pipeline.config import ScoringConfig
from gateway.pipeline.fallback import FallbackScorer, own_layout
from gateway.pipeline.fusion import Fusion, fusion_rule
from gateway.pipeline.hotswap import (
    ModelInfo,
    ShadowSummary,
    check_replacement,
    load_startup,
    load_verified,
)
from gateway.pipeline.model_state import ModelState, load_startup_model
from gateway.pipeline.node_types import NodeTypes
from gateway.pipeline.scoring import BatchScorer, ModelSlot, ScoredBatch, ScoringWorker
from gateway.pipeline.windows import ChannelMapper, Row
from gateway.protocol.messages import Channel, NodeInference, ReadingBatch, Status
from gateway.protocol.signed_manifest import load_public_key
from gateway.store.baselines import BaselineStore
from gateway.store.journal import CommitResult
from tinymodels.runtime import GatewayModel

_LOGGER = logging.getLogger(__name__)

ObservationSink = Callable[[Sequence[Observation]], None]


@dataclass
class PipelineStats:
    samples: int = 0  # new samples observed
    late_samples: int = 0  # new to the journal but older than what this node already sent
    nonfinite_rows: int = 0  # NaN/inf values: observed as readings, not scored
    unscorable_rows: int = 0  # the node's channels do not map to the model's
    gateway_scores: int = 0
    node_scores: int = 0
    disagreements: int = 0


class _ChannelUse(NamedTuple):
    picked: list[tuple[int, str]]  # (column, name) of the channels alert rules observe
    plan: tuple[int, ...] | None  # model channel -> column; None: not scorable (or scoring off)
    layout: str  # what the planned rows mean, for stored baselines ("" without a plan)


_NO_USE: Final = _ChannelUse([], None, "")


class ScoringPipeline:
    """Windows → features → gateway model → observations, plus fusion with node scores."""

    def __init__(
        self,
        config: ScoringConfig,
        *,
        model: GatewayModel | None = None,
        model_info: ModelInfo | None = None,
        baselines_path: Path | None = None,
        model_state: ModelState | None = None,
    ) -> None:
        """``baselines_path``: where node baselines persist across restarts (the gateway
        passes :func:`gateway.store.baselines.baselines_path_for` of its journal); None, or
        ``scoring.persist_baselines = false``, keeps them in memory only. ``model_state``:
        the persisted anti-rollback floors and installed model (the gateway's
        ``<data_dir>/gateway-model``); None keeps floors in memory only."""
        self.config = config
        self._model_state = model_state
        if model is None and model_state is not None:
            model, model_info = load_startup_model(
                model_state, config.model_path, config.public_key_path
            )
        elif model is None:
            model, model_info = load_startup(config.model_path, config.public_key_path)
        elif model_info is None:
            m = model.manifest
            model_info = ModelInfo(
                config.model_path, str(m.get("name")), str(m.get("version")),
                str(m.get("sha256")), None, False, str(m.get("name")),
            )  # fmt: skip
        feature_cfg = model.feature_config
        if feature_cfg is None:
            raise ModelError(f"{model_info.path}: not a gateway model (no feature config)")
        self.calibration_rows = config.calibration_rows or feature_cfg.fit_rows
        self._mapper = ChannelMapper(feature_cfg, config.channel_map, config.missing_channels)
        store = (
            BaselineStore(baselines_path)
            if baselines_path is not None and config.persist_baselines and config.enabled
            else None
        )
        self.scorer = BatchScorer(
            ModelSlot(model, model_info),
            self.calibration_rows,
            config.batch_rows,
            baselines=store,
            fallback=FallbackScorer(self.calibration_rows) if config.fallback != "off" else None,
        )
        # Per node type (issue 16, gateway/pipeline/node_types.py): detector, model, channel map.
        self._node_types = (
            NodeTypes(config, model) if config.node_types and config.enabled else None
        )
        if self._node_types is not None:
            self.scorer.typed = {
                k: ModelSlot(m, i) for k, (m, i) in self._node_types.models.items()
            }
        self.worker = ScoringWorker(
            self.scorer,
            queue_rows=config.queue_rows,
            max_batch_delay_s=config.max_batch_delay_ms / 1000,
            on_scores=self._on_scores,
            thread_name="scoring",
        )
        self.fusion = Fusion(config.disagreement, config.node_thresholds, fusion_rule(config))
        self.stats = PipelineStats()
        self._sinks: list[ObservationSink] = []
        self._seen: dict[tuple[str, int], int] = {}  # (node, boot) -> highest seq observed
        self._shadow_path = config.shadow_model_path
        # Channels some consumer (an alert threshold rule) looks at; None: every channel.
        # A ChannelReading per sample and channel is most of on_commit's cost, so readings
        # nobody reads are not made.
        self._observed_channels: frozenset[str] | None = None
        self._last_channels: tuple[tuple[Channel, ...] | None, _ChannelUse] = (None, _NO_USE)
        self._row_getters: dict[
            tuple[int, ...], Callable[[tuple[float, ...]], tuple[float, ...]]
        ] = {}
        self.ready = asyncio.Event()

    # -- wiring --------------------------------------------------------------------------------

    def observe_channels(self, channels: frozenset[str] | None) -> None:
        """Emit ChannelReadings only for ``channels`` (None: all of them)."""
        self._observed_channels = channels
        self._last_channels = (None, _NO_USE)

    def _channel_use(self, channels: tuple[Channel, ...]) -> _ChannelUse:
        """What a batch with ``channels`` feeds: observed channels, scoring plan and layout."""
        # Batches of one stream share one channels tuple (the codec's): remember the last.
        last, use = self._last_channels
        if channels is not last:
            wanted = self._observed_channels
            picked = [
                (j, c.name) for j, c in enumerate(channels) if wanted is None or c.name in wanted
            ]
            plan = self._mapper.plan(channels) if self.config.enabled else None
            layout = self._mapper.layout(channels) if plan is not None else ""
            if plan is None and self.config.enabled and self.config.fallback != "off" and channels:
                # Issue 16: scored from its own baseline (gateway/pipeline/fallback.py).
                plan, layout = tuple(range(len(channels))), own_layout(channels)
            use = _ChannelUse(picked, plan, layout)
            self._last_channels = (channels, use)
        return use

    def add_sink(self, sink: ObservationSink) -> None:
        """Call ``sink`` with every batch of observations, on the event loop (must not block)."""
        self._sinks.append(sink)

    @property
    def model_info(self) -> ModelInfo:
        return self.scorer.primary.info

    def shadow_summary(self) -> ShadowSummary | None:
        stats = self.scorer.shadow_stats
        return stats.summary() if stats is not None else None

    async def run(self) -> None:
        """The scoring worker; first loads the stored baselines and the configured shadow
        model, if any (rows committed meanwhile wait in the queue)."""
        await self.worker.call(self.scorer.load_baselines)
        if self._shadow_path is not None:
            await self.start_shadow(self._shadow_path)
        self.ready.set()
        await self.worker.run()

    # -- the commit listener -------------------------------------------------------------------

    def on_commit(self, result: CommitResult) -> None:
        """Journal writer listener: observe what this commit made durable (non-blocking)."""
        out: list[Observation] = []
        rows: list[Row] = []
        new_counts = result.new_counts
        gaps = dict(result.lost_by_node)
        for i, env in enumerate(result.envelopes):
            if i < len(new_counts) and new_counts[i] == 0:
                continue
            msg = env.msg
            wall = result.wall_ms[i] if i < len(result.wall_ms) else ()
            key = (msg.node_id, msg.boot_id)
            seen = self._seen.get(key, 0)
            if isinstance(msg, ReadingBatch):
                self._observe_batch(msg, wall, env.rx_ms, seen, out=out, rows=rows)
            elif msg.seq > seen:
                t_ms = wall[0] if wall else env.rx_ms
                if isinstance(msg, NodeInference):
                    score = self.fusion.node_score(msg, t_ms)
                    out.append(score)
                    self.stats.node_scores += 1
                    self._fuse(score, out)
                elif isinstance(msg, Status):
                    rssi = msg.rssi_dbm if msg.rssi_dbm is not None else env.rssi_dbm
                    out.append(
                        NodeHealth(msg.node_id, t_ms, msg.battery_mv, rssi, msg.free_ram_bytes)
                    )
                    lost = gaps.pop(msg.node_id, 0)
                    if lost:
                        out.append(GapObserved(msg.node_id, t_ms, lost))
            else:
                self.stats.late_samples += 1
            self._seen[key] = max(seen, msg.last_seq)
        for node_id, lost in gaps.items():
            if lost:
                t_ms = max(
                    (e.rx_ms for e in result.envelopes if e.msg.node_id == node_id), default=0
                )
                out.append(GapObserved(node_id, t_ms, lost))
        if rows and self.config.enabled:
            self.worker.submit(rows)
        if out:
            self._emit(out)

    def _observe_batch(
        self,
        msg: ReadingBatch,
        wall: tuple[int, ...],
        rx_ms: int,
        seen: int,
        *,
        out: list[Observation],
        rows: list[Row],
    ) -> None:
        picked, plan, layout = self._channel_use(msg.channels)
        if self._node_types is not None:  # per node type: gateway/pipeline/node_types.py
            plan, layout = self._node_types.plan(msg.node_id, msg.channels) or (plan, layout)
        if not picked and plan is None:
            # Nothing to observe or score in this batch: only the bookkeeping.
            late = min(len(msg.samples), max(0, seen - msg.seq + 1))
            self.stats.late_samples += late
            if self.config.enabled:
                self.stats.unscorable_rows += len(msg.samples) - late
            self.stats.samples += len(msg.samples) - late
            return
        node_id = msg.node_id
        samples = msg.samples
        # Sequence numbers rise through a batch: the late samples are a prefix.
        late = min(len(samples), max(0, seen - msg.seq + 1))
        self.stats.late_samples += late
        self.stats.samples += len(samples) - late
        n_wall = len(wall)
        times = [wall[j] if j < n_wall else rx_ms for j in range(late, len(samples))]
        fresh = samples[late:] if late else samples
        if picked:
            if len(picked) == 1:
                k, name = picked[0]
                out.extend(
                    [
                        ChannelReading(node_id, t, name, s.values[k])
                        for t, s in zip(times, fresh, strict=True)
                    ]
                )
            else:
                out.extend(
                    [ChannelReading(node_id, t, name, s.values[k])
                     for t, s in zip(times, fresh, strict=True) for k, name in picked]
                )  # fmt: skip
        if not self.config.enabled:
            return
        if plan is None:
            self.stats.unscorable_rows += len(fresh)
            return
        to_row = self._row_getter(plan)
        isfinite = math.isfinite
        for t, sample in zip(times, fresh, strict=True):
            values = sample.values
            if all(map(isfinite, values)):
                rows.append(Row(node_id, t, to_row(values), layout))
            else:
                self.stats.nonfinite_rows += 1

    def _row_getter(
        self, plan: tuple[int, ...]
    ) -> Callable[[tuple[float, ...]], tuple[float, ...]]:
        getter = self._row_getters.get(plan)
        if getter is None:
            if len(self._row_getters) >= 1024:  # plans come from node channel lists: bounded
                self._row_getters.clear()
            getter = self._row_getters[plan] = ChannelMapper.row_getter(plan)
        return getter

    # -- scores from the worker ----------------------------------------------------------------

    def _on_scores(self, batch: ScoredBatch) -> None:
        out: list[Observation] = []
        # Observing a gateway score never changes what fusing another one reads (the node's
        # latest node score, the node's state machine), so all are observed first and fused
        # in one array operation; the output order is as if one by one.
        fusion = self.fusion
        disagreements = [fusion.observe(score) for score in batch.gateway]
        fused = fusion.fuse_many(batch.gateway)
        for score, f, disagreement in zip(batch.gateway, fused, disagreements, strict=True):
            out.append(score)
            if f is not None:
                out.append(f)
            if disagreement is not None:
                self.stats.disagreements += 1
                out.append(disagreement)
        out.extend(batch.shadow)
        self.stats.gateway_scores += len(batch.gateway)
        if out:
            self._emit(out)

    def _fuse(self, score: AnomalyScore, out: list[Observation]) -> None:
        disagreement = self.fusion.observe(score)
        fused = self.fusion.fuse(score)  # issue 16: the fused score beside both
        if fused is not None:
            out.append(fused)
        if disagreement is not None:
            self.stats.disagreements += 1
            out.append(disagreement)

    def _emit(self, observations: list[Observation]) -> None:
        for sink in self._sinks:
            sink(observations)

    # -- hot swap and shadow -------------------------------------------------------------------

    async def swap_model(self, path: Path) -> ModelInfo:
        """Replace the running model with the signed model at ``path``, without a restart.

        Verification and loading run on the scoring thread between batches; on any failure a
        :class:`ModelError` says why and the running model stays. Each node keeps its
        baseline: the new model is refitted on it, so scoring carries on at once.
        """
        model, info = await self.worker.call(lambda: self._load_candidate(path))

        def install() -> None:
            if self._model_state is not None:  # the floor first: a swap that is not kept fails
                self._model_state.record(info)
            self.scorer.replace_primary(ModelSlot(model, info))

        await self.worker.call(install)
        _LOGGER.info("gateway model swapped: %s %s (%s)", info.name, info.version, path)
        return info

    async def start_shadow(self, path: Path) -> ModelInfo:
        """Score with the signed model at ``path`` alongside the running one (never alerts)."""
        model, info = await self.worker.call(lambda: self._load_candidate(path))
        await self.worker.call(lambda: self.scorer.set_shadow(ModelSlot(model, info)))
        _LOGGER.info("shadow model: %s %s (%s)", info.name, info.version, path)
        return info

    async def stop_shadow(self) -> ShadowSummary | None:
        summary = self.shadow_summary()
        await self.worker.call(lambda: self.scorer.set_shadow(None))
        return summary

    async def promote_shadow(self) -> ModelInfo:
        """Make the shadow model the running one (it was verified when it was started)."""

        def promote() -> ModelInfo:
            shadow = self.scorer.shadow
            if shadow is None:
                raise ModelError("no shadow model to promote; start one with start_shadow")
            if self._model_state is not None:
                self._model_state.record(shadow.info)
            self.scorer.set_shadow(None)
            self.scorer.replace_primary(ModelSlot(shadow.model, shadow.info))
            return shadow.info

        return await self.worker.call(promote)

    def _load_candidate(self, path: Path) -> tuple[GatewayModel, ModelInfo]:
        key_path = self.config.public_key_path
        if key_path is None:
            raise ModelError(
                "scoring.public_key_path is not set: a new gateway model cannot be verified, so "
                "it is refused; configure the public key that signs your models"
            )
        key = load_public_key(key_path)

        def load(candidate: Path) -> tuple[GatewayModel, ModelInfo]:
            model, info = load_verified(candidate, key)
            primary = self.scorer.primary
            check_replacement(primary.model, primary.info, model, info, self.config.model_families)
            return model, info

        # With a model state: checked against the persisted floor, and kept for restarts.
        return self._model_state.admit(path, load) if self._model_state else load(path)
