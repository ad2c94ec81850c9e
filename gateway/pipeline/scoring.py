"""Batched scoring off the event loop: one worker thread, batches across nodes.

:class:`BatchScorer` is the synchronous core: it takes rows of many nodes, runs each node's
:class:`~gateway.pipeline.windows.NodeStream`, and calls the model once per batch for all nodes'
autoencoder windows. It scores with the running model and, in shadow mode, with a candidate
model too. It is only ever called on the worker thread, which owns every stream.

:class:`ScoringWorker` feeds it: the event loop hands rows over with :meth:`ScoringWorker.submit`
(non-blocking); a bounded queue holds them until the worker thread is free. Overflow policy:
when ``queue_rows`` rows are already waiting, incoming rows are dropped (newest first, so the
rows already queued keep their order), counted per node in ``dropped_rows``, and scoring
resumes with the next rows that fit; the node's window then bridges the hole. The rows stay in
the journal, so nothing durable is lost, only scores for those rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from gateway.events import AnomalyScore, ScoreSource
from gateway.pipeline.fallback import LAYOUT_PREFIX, FallbackScorer
from gateway.pipeline.hotswap import ModelInfo, ShadowStats
from gateway.pipeline.node_types import slot_of
from gateway.pipeline.stacked import FitStack, score_many
from gateway.pipeline.windows import NodeStream, Row
from gateway.store.baselines import BaselineStore, StoredBaseline
from tinymodels.attribution import row_shares, top_channels
from tinymodels.gateway_features import FeatureConfig
from tinymodels.runtime import GatewayModel

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ModelSlot:
    """A model in use and every node's state for it."""

    model: GatewayModel
    info: ModelInfo
    streams: dict[str, NodeStream] = field(default_factory=dict)
    stack: FitStack | None = None  # the calibrated streams' fits, stacked (stacked.py)

    def fit_stack(self) -> FitStack:
        if self.stack is None:
            cfg = self.model.feature_config
            assert cfg is not None
            self.stack = FitStack(cfg)
        return self.stack


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    gateway: list[AnomalyScore]
    shadow: list[AnomalyScore]
    seconds: float


@dataclass
class BaselineStats:
    loaded: int = 0  # baselines read from the store at start
    restored: int = 0  # nodes that started scoring on a stored baseline
    ignored: int = 0  # nodes whose stored baseline did not fit (other layout or length)
    saved: int = 0  # baselines written
    save_failures: int = 0  # write attempts that failed (logged; those nodes recalibrate)


class BatchScorer:
    """Scores rows of many nodes with the running model (and the shadow model, if any).

    With a :class:`BaselineStore`, a node's baseline is written when it completes and a node
    seen for the first time starts from its stored baseline when one was recorded under the
    same layout and with ``calibration_rows`` rows (docs/scoring.md, "Baselines across
    restarts").
    """

    def __init__(
        self,
        primary: ModelSlot,
        calibration_rows: int,
        batch_rows: int,
        *,
        baselines: BaselineStore | None = None,
        fallback: FallbackScorer | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.shadow: ModelSlot | None = None
        self.typed: dict[str, ModelSlot] = {}  # node types with their own model (node_types.py)
        self.shadow_stats: ShadowStats | None = None
        self.calibration_rows = calibration_rows
        self.batch_rows = batch_rows
        self.baselines = baselines
        self.baseline_stats = BaselineStats()
        self._stored: dict[str, dict[str, StoredBaseline]] = {}  # node -> layout -> baseline

    def load_baselines(self) -> int:
        """Read every stored baseline into memory (on the scoring thread, before any batch);
        returns how many. A node's baseline is refitted when its first row arrives."""
        if self.baselines is None:
            return 0
        self._stored.clear()
        for b in self.baselines.load():
            self._stored.setdefault(b.node_id, {})[b.layout] = b
        loaded = sum(len(v) for v in self._stored.values())
        self.baseline_stats.loaded = loaded
        if loaded:
            _LOGGER.info("%d stored node baseline(s) loaded from %s", loaded, self.baselines.path)
        return loaded

    def score(self, rows: Sequence[Row]) -> ScoredBatch:
        started = time.perf_counter()
        by_node: dict[str, list[Row]] = {}
        own: dict[str, list[Row]] = {}  # rows of nodes the model does not cover (fallback.py)
        typed: dict[str, dict[str, list[Row]]] = {}  # slot key -> node -> rows
        for row in rows:
            target = own if row.layout.startswith(LAYOUT_PREFIX) else by_node
            if self.typed and (key := slot_of(row.layout)) is not None:
                target = typed.setdefault(key, {})
            target.setdefault(row.node_id, []).append(row)
        gateway = self._score_slot(self.primary, by_node, ScoreSource.GATEWAY) if by_node else []
        for key, node_rows in typed.items():
            gateway += self._score_slot(self.typed[key], node_rows, ScoreSource.GATEWAY)
        if own and self.fallback is not None:
            gateway += self.fallback.score(self.primary.model, own)
        shadow: list[AnomalyScore] = []
        if self.shadow is not None:
            shadow = self._score_slot(self.shadow, by_node, ScoreSource.SHADOW)
            if self.shadow_stats is not None:
                self.shadow_stats.add(gateway, shadow)
        return ScoredBatch(gateway, shadow, time.perf_counter() - started)

    def _score_slot(
        self, slot: ModelSlot, by_node: dict[str, list[Row]], source: ScoreSource
    ) -> list[AnomalyScore]:
        cfg = slot.model.feature_config
        assert cfg is not None
        primary = slot is self.primary
        completed: list[NodeStream] = []
        ready: list[tuple[NodeStream, Sequence[Row]]] = []
        for node_id, node_rows in by_node.items():
            stream = slot.streams.get(node_id)
            if stream is None:
                stream = slot.streams[node_id] = self._new_stream(
                    node_id, cfg, node_rows[0].layout, log=primary
                )
            calibrated = stream.calibrated
            rest = stream.take(slot.model, node_rows)
            if not calibrated and stream.calibrated and not stream.restored:
                completed.append(stream)
            if rest:
                ready.append((stream, rest))
        if primary and completed:
            # Raw rows and layout do not depend on the model, so the shadow's copy of the
            # same baseline would be the same record: only the running model's is written.
            self._save_baselines(completed, slot.info.version)
        if not ready:
            return []
        # Every node's rows through each statistic at once (gateway/pipeline/stacked.py).
        model, batch_rows = slot.model, self.batch_rows
        scores, counts, zm = score_many(
            slot.fit_stack(),
            [st for st, _ in ready],
            [[r.values for r in rest] for _, rest in ready],
            (lambda w: model.predict_batched(w, batch_rows)) if "ae" in cfg.components else None,
        )
        out: list[AnomalyScore] = []
        version = slot.info.version
        names = cfg.model_channels if cfg.model_channels is not None else cfg.channels
        for i, ((stream, rest), node_scores) in enumerate(zip(ready, scores.tolist(), strict=True)):
            node_id = stream.node_id
            shares: npt.NDArray[np.float64] | None = None
            worked_out = False  # shares: the node's rows' channel shares, on first use
            for j, (row, score) in enumerate(zip(rest, node_scores, strict=False)):
                top: tuple[tuple[str, float], ...] = ()
                if score >= 1:  # which channels: only worth the work for a score that could alert
                    if not worked_out:
                        fit = stream.fit
                        assert fit is not None
                        rows = np.ascontiguousarray(zm[i, : counts[i]])
                        shares, worked_out = row_shares(fit.pca, fit.mset, rows), True
                    if shares is not None:
                        top = top_channels(shares[j], names)
                out.append(AnomalyScore(node_id, row.t_ms, source, score, version, top))
        return out

    def _new_stream(
        self, node_id: str, cfg: FeatureConfig, layout: str, *, log: bool
    ) -> NodeStream:
        stream = NodeStream(node_id, cfg, self.calibration_rows, layout=layout)
        stored = self._stored.get(node_id)
        if not stored:
            return stream
        baseline = stored.get(layout) if layout else None
        if baseline is None:
            if log:
                self.baseline_stats.ignored += 1
                _LOGGER.warning(
                    "%s: stored baseline not used: recorded for layout %s, the node now sends "
                    "%s; it recalibrates (%d rows)",
                    node_id, " / ".join(stored), layout or "(unknown)", self.calibration_rows,
                )  # fmt: skip
            return stream
        columns = {len(r) for r in baseline.rows}
        if len(baseline.rows) != self.calibration_rows or columns != {len(cfg.channels)}:
            if log:
                self.baseline_stats.ignored += 1
                _LOGGER.warning(
                    "%s: stored baseline not used: %d rows of %s columns, scoring needs %d rows "
                    "of %d; it recalibrates",
                    node_id, len(baseline.rows), sorted(columns), self.calibration_rows,
                    len(cfg.channels),
                )  # fmt: skip
            return stream
        # The row tuples are shared with the loaded record, not copied.
        stream.baseline = list(baseline.rows)
        stream.restored = True
        if log:
            self.baseline_stats.restored += 1
            _LOGGER.info(
                "%s: scoring on the stored baseline (%d rows, model %s at the time)",
                node_id, len(baseline.rows), baseline.model_version,
            )  # fmt: skip
        return stream

    def _save_baselines(self, streams: Sequence[NodeStream], model_version: str) -> None:
        if self.baselines is None:
            return
        records = [
            StoredBaseline(s.node_id, s.layout, tuple(s.baseline), model_version)
            for s in streams
            if s.layout
        ]
        if not records:
            return
        if self.baselines.save(records):
            self.baseline_stats.saved += len(records)
        else:
            self.baseline_stats.save_failures += 1

    def replace_primary(self, slot: ModelSlot) -> None:
        """Score with ``slot`` from now on; each node keeps its baseline (no recalibration)."""
        slot.streams = {n: s.rebuilt_for(slot.model) for n, s in self.primary.streams.items()}
        self.primary = slot

    def set_shadow(self, slot: ModelSlot | None) -> None:
        if slot is not None:
            slot.streams = {n: s.rebuilt_for(slot.model) for n, s in self.primary.streams.items()}
            self.shadow_stats = ShadowStats(self.primary.info.version, slot.info.version)
        else:
            self.shadow_stats = None
        self.shadow = slot


@dataclass
class WorkerStats:
    queued_rows: int = 0
    scored_rows: int = 0
    batches: int = 0
    max_batch_rows: int = 0
    last_batch_s: float = 0.0
    dropped_rows: Counter[str] = field(default_factory=Counter)  # per node, overflow policy


class ScoringWorker:
    """A bounded row queue in front of one worker thread running a :class:`BatchScorer`."""

    def __init__(
        self,
        scorer: BatchScorer,
        *,
        queue_rows: int,
        max_batch_delay_s: float,
        on_scores: Callable[[ScoredBatch], None],
        thread_name: str = "scoring",
    ) -> None:
        self.scorer = scorer
        self._queue: deque[Row] = deque()
        self._max_rows = queue_rows
        self._delay_s = max_batch_delay_s
        self._on_scores = on_scores
        self._wake = asyncio.Event()
        self._full = asyncio.Event()  # batch_rows rows wait: no reason to wait for more
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self.stats = WorkerStats()

    def qsize(self) -> int:
        return len(self._queue)

    def submit(self, rows: Sequence[Row]) -> int:
        """Queue rows for scoring without blocking; returns how many were accepted."""
        room = self._max_rows - len(self._queue)
        accepted = rows if len(rows) <= room else rows[: max(room, 0)]
        for row in rows[len(accepted) :]:
            self.stats.dropped_rows[row.node_id] += 1
        if accepted:
            self._queue.extend(accepted)
            self.stats.queued_rows += len(accepted)
            self._wake.set()
            if len(self._queue) >= self.scorer.batch_rows:
                self._full.set()
        return len(accepted)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker thread, between batches (it owns the scorer's state)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wake.wait()
                if self._delay_s > 0 and len(self._queue) < self.scorer.batch_rows:
                    # A small batch waits for more rows, but not past a full one: a long
                    # wait at a busy gateway would make one long model call, which holds
                    # the GIL (and so the event loop) for its Python parts.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._delay_s):
                            await self._full.wait()
                self._wake.clear()
                self._full.clear()
                while self._queue:
                    n = min(len(self._queue), self.scorer.batch_rows)
                    if n == len(self._queue):
                        batch = list(self._queue)
                        self._queue.clear()
                    else:
                        batch = [self._queue.popleft() for _ in range(n)]
                    result = await loop.run_in_executor(self._executor, self.scorer.score, batch)
                    self.stats.scored_rows += n
                    self.stats.batches += 1
                    self.stats.max_batch_rows = max(self.stats.max_batch_rows, n)
                    self.stats.last_batch_s = result.seconds
                    self._on_scores(result)
        finally:
            # A batch still running finishes first (it only touches the scorer's own state).
            self._executor.shutdown(wait=True)
