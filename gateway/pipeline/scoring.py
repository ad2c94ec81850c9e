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
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from gateway.events import AnomalyScore, ScoreSource
from gateway.pipeline.hotswap import ModelInfo, ShadowStats
from gateway.pipeline.windows import NodeStream, Prepared, Row
from tinymodels.gateway_features import window_errors
from tinymodels.runtime import GatewayModel

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ModelSlot:
    """A model in use and every node's state for it."""

    model: GatewayModel
    info: ModelInfo
    streams: dict[str, NodeStream] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    gateway: list[AnomalyScore]
    shadow: list[AnomalyScore]
    seconds: float


class BatchScorer:
    """Scores rows of many nodes with the running model (and the shadow model, if any)."""

    def __init__(self, primary: ModelSlot, calibration_rows: int, batch_rows: int) -> None:
        self.primary = primary
        self.shadow: ModelSlot | None = None
        self.shadow_stats: ShadowStats | None = None
        self.calibration_rows = calibration_rows
        self.batch_rows = batch_rows

    def score(self, rows: Sequence[Row]) -> ScoredBatch:
        started = time.perf_counter()
        by_node: dict[str, list[Row]] = {}
        for row in rows:
            by_node.setdefault(row.node_id, []).append(row)
        gateway = self._score_slot(self.primary, by_node, ScoreSource.GATEWAY)
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
        prepared: list[Prepared] = []
        for node_id, node_rows in by_node.items():
            stream = slot.streams.get(node_id)
            if stream is None:
                stream = slot.streams[node_id] = NodeStream(node_id, cfg, self.calibration_rows)
            p = stream.prepare(slot.model, node_rows)
            if p is not None:
                prepared.append(p)
        if not prepared:
            return []
        errors: list[np.ndarray | None] = [None] * len(prepared)
        if "ae" in cfg.components:
            windows = np.concatenate([p.windows for p in prepared])
            recon = slot.model.predict_batched(windows, self.batch_rows)
            all_errors = window_errors(windows, recon)
            bounds = np.cumsum([0, *(len(p.t_ms) for p in prepared)])
            errors = [all_errors[a:b] for a, b in itertools.pairwise(bounds)]
        out: list[AnomalyScore] = []
        version = slot.info.version
        for p, err in zip(prepared, errors, strict=True):
            scores = p.stream.finish(p, err)
            node_id = p.stream.node_id
            out.extend(
                AnomalyScore(node_id, t, source, s, version)
                for t, s in zip(p.t_ms, scores.tolist(), strict=True)
            )
        return out

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
                    await asyncio.sleep(self._delay_s)
                self._wake.clear()
                while self._queue:
                    n = min(len(self._queue), self.scorer.batch_rows)
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
