"""The batch scorer batches across nodes; the worker's queue is bounded with a counted policy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np

from gateway.events import ScoreSource
from gateway.pipeline.hotswap import load_trusted
from gateway.pipeline.scoring import BatchScorer, ModelSlot, ScoredBatch, ScoringWorker
from gateway.pipeline.windows import NodeStream, Row
from tests.unit.pipeline.helpers import pump_frame
from tinymodels.gateway_features import window_errors
from tinymodels.runtime import DEFAULT_GATEWAY_MODEL


def _scorer(calibration: int = 64, batch_rows: int = 256) -> BatchScorer:
    model, info = load_trusted(DEFAULT_GATEWAY_MODEL)
    return BatchScorer(ModelSlot(model, info), calibration, batch_rows)


def _rows(node: str, frame: np.ndarray) -> list[Row]:
    return [Row(node, i * 1000, tuple(r)) for i, r in enumerate(frame)]


@contextlib.asynccontextmanager
async def running(worker: ScoringWorker) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.run(), name="test:scoring-worker")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def scored_rows(worker: ScoringWorker, n: int) -> None:
    async with asyncio.timeout(10):
        while worker.stats.scored_rows < n:
            await asyncio.sleep(0.01)


def test_interleaved_nodes_score_as_if_each_were_alone() -> None:
    a, b = pump_frame(1, 200, fault_from=150), pump_frame(2, 200)
    alone_a = _scorer().score(_rows("a", a)).gateway
    alone_b = _scorer().score(_rows("b", b)).gateway
    mixed = _scorer()
    together = []
    ra, rb = _rows("a", a), _rows("b", b)
    for i in range(0, 200, 30):
        together += mixed.score(ra[i : i + 30] + rb[i : i + 30]).gateway
    got_a = [s.score for s in together if s.node_id == "a"]
    got_b = [s.score for s in together if s.node_id == "b"]
    np.testing.assert_allclose(got_a, [s.score for s in alone_a], rtol=1e-5)
    np.testing.assert_allclose(got_b, [s.score for s in alone_b], rtol=1e-5)
    assert len(got_a) == 200 - 64
    assert all(s.source is ScoreSource.GATEWAY and s.model_version == "2.0.0" for s in together)
    assert [s.t_ms for s in together if s.node_id == "a"] == [i * 1000 for i in range(64, 200)]


async def test_overflow_drops_incoming_rows_counts_them_per_node_and_keeps_the_queued_order() -> (
    None
):
    got: list[ScoredBatch] = []
    worker = ScoringWorker(
        _scorer(calibration=16, batch_rows=8),
        queue_rows=40,
        max_batch_delay_s=0,
        on_scores=got.append,
    )
    # The worker is not running yet, so nothing drains: the queue fills up.
    assert worker.submit(_rows("a", pump_frame(1, 30))) == 30
    assert worker.submit(_rows("b", pump_frame(2, 25))) == 10
    assert worker.submit(_rows("c", pump_frame(3, 5))) == 0
    assert worker.stats.dropped_rows == {"b": 15, "c": 5}
    assert worker.qsize() == 40
    async with running(worker):
        await scored_rows(worker, 40)
    scored = [s for b in got for s in b.gateway]
    # a: 30 rows, 16 calibrate; b: 10 accepted rows never complete its baseline.
    assert [s.t_ms for s in scored] == [i * 1000 for i in range(16, 30)]
    assert worker.stats.max_batch_rows == 8
    assert worker.stats.queued_rows == 40


def test_nodes_with_different_row_counts_in_one_batch_score_as_each_node_alone() -> None:
    # Three nodes, batches in which each brings a different number of rows (0 to 9): the
    # stacked scorer pads the short ones, and every score is the one the node's own streaming
    # path gives (NodeStream.prepare/finish), bit for bit.
    frames = {
        f"n{k}": pump_frame(10 + k, 160, fault_from=120 if k == 1 else None) for k in range(3)
    }
    rows = {n: _rows(n, f) for n, f in frames.items()}
    scorer = _scorer()
    got: dict[str, list[float]] = {n: [] for n in frames}
    taken = dict.fromkeys(frames, 0)
    sizes = {"n0": [1, 4, 9, 2], "n1": [3, 1, 0, 7], "n2": [9, 9, 1, 1]}
    step = 0
    while any(taken[n] < 160 for n in frames):
        batch = []
        for n in frames:
            k = sizes[n][step % 4]
            batch += rows[n][taken[n] : taken[n] + k]
            taken[n] += k
        step += 1
        for s in scorer.score(batch).gateway:
            got[s.node_id].append(s.score)
    model, _ = load_trusted(DEFAULT_GATEWAY_MODEL)
    cfg = model.feature_config
    assert cfg is not None
    for n in frames:
        stream = NodeStream(n, cfg, 64)
        alone: list[float] = []
        for i in range(0, 160, 10):
            prepared = stream.prepare(model, rows[n][i : i + 10])
            if prepared is not None:
                errors = window_errors(prepared.windows, model.predict_batched(prepared.windows))
                alone += stream.finish(prepared, errors).tolist()
        assert got[n] == alone
    # The fault shows, so this compares something.
    assert np.mean(got["n1"][-30:]) > 2 * np.mean(got["n0"][-30:])


async def test_a_full_batch_is_scored_without_waiting_out_the_batch_delay() -> None:
    got: list[ScoredBatch] = []
    worker = ScoringWorker(
        _scorer(calibration=16, batch_rows=8),
        queue_rows=100,
        max_batch_delay_s=60.0,  # were the full batch to wait for it, the timeout would fire
        on_scores=got.append,
    )
    async with running(worker):
        worker.submit(_rows("a", pump_frame(1, 7)))
        await asyncio.sleep(0.2)
        assert worker.stats.scored_rows == 0  # 7 of 8 rows: it waits for more
        worker.submit(_rows("b", pump_frame(2, 1)))
        await scored_rows(worker, 8)
    assert worker.stats.batches == 1
    assert worker.stats.max_batch_rows == 8
