"""What the pipeline observes from real journal commits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from gateway.events import (
    AnomalyScore,
    ChannelReading,
    Disagreement,
    GapObserved,
    NodeHealth,
    Observation,
    ScoreSource,
)
from gateway.ingest import Envelope
from gateway.pipeline import ScoringConfig, ScoringPipeline
from gateway.protocol.messages import NodeInference, Status, TimeBase, Transport
from gateway.store.journal import CommitResult, Journal
from tests.unit.pipeline.helpers import batches, envelope, pump_frame, running

T0 = 1_700_000_000_000

_O = TypeVar("_O", bound=Observation)


class Collector:
    def __init__(self) -> None:
        self.items: list[Observation] = []

    def __call__(self, observations: Sequence[Observation]) -> None:
        self.items.extend(observations)

    def of(self, kind: type[_O]) -> list[_O]:
        return [o for o in self.items if isinstance(o, kind)]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    j.open()
    yield j
    j.close()


async def _until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


def _commit(journal: Journal, pipeline: ScoringPipeline, envs: list[Envelope]) -> CommitResult:
    result = journal.commit(envs)
    pipeline.on_commit(result)
    return result


async def test_every_committed_sample_becomes_channel_readings_once(journal: Journal) -> None:
    pipeline = ScoringPipeline(ScoringConfig(calibration_rows=64))
    seen = Collector()
    pipeline.add_sink(seen)
    envs = [envelope(b) for b in batches("pump-1", pump_frame(1, 50), per_batch=10)]
    _commit(journal, pipeline, envs[:3])
    _commit(journal, pipeline, envs[1:])  # batches 1 and 2 again: duplicates
    readings = seen.of(ChannelReading)
    assert len(readings) == 50 * 8
    assert readings[0] == ChannelReading("pump-1", T0, "Accelerometer1RMS", readings[0].value)
    assert [r.t_ms for r in readings[::8]] == [T0 + i * 1000 for i in range(50)]
    assert pipeline.stats.samples == 50
    assert pipeline.worker.qsize() == 50


async def test_gateway_scores_follow_calibration_and_carry_wall_time(journal: Journal) -> None:
    pipeline = ScoringPipeline(ScoringConfig(calibration_rows=64, max_batch_delay_ms=0))
    seen = Collector()
    pipeline.add_sink(seen)
    frame = pump_frame(2, 200, fault_from=150)
    async with running(pipeline):
        for b in batches("pump-1", frame, per_batch=20):
            _commit(journal, pipeline, [envelope(b)])
            await asyncio.sleep(0)
        await _until(lambda: len(seen.of(AnomalyScore)) >= 200 - 64)
    scores = seen.of(AnomalyScore)
    assert [s.t_ms for s in scores] == [T0 + i * 1000 for i in range(64, 200)]
    assert all(s.source is ScoreSource.GATEWAY for s in scores)
    assert max(s.score for s in scores[:80]) < 1.5
    assert min(s.score for s in scores[100:]) > 1.0


async def test_status_gives_node_health_and_counted_losses_give_a_gap(journal: Journal) -> None:
    pipeline = ScoringPipeline(ScoringConfig())
    seen = Collector()
    pipeline.add_sink(seen)
    frame = pump_frame(3, 10)
    [first] = batches("pump-1", frame, per_batch=10)
    _commit(journal, pipeline, [envelope(first)])
    # The node lost seqs 11..20 (buffer overflow) and says its oldest unacked seq is 21.
    status = Status(
        "pump-1", 1, 21, TimeBase.UNIX_MS, T0 + 30_000, 30_000, 3300, -60, 2048, "1.2.0", 21
    )
    _commit(journal, pipeline, [Envelope(status, Transport.SERIAL, T0 + 30_000)])
    assert seen.of(NodeHealth) == [NodeHealth("pump-1", T0 + 30_000, 3300, -60, 2048)]
    assert seen.of(GapObserved) == [GapObserved("pump-1", T0 + 30_000, 10)]


async def test_node_inference_becomes_a_node_score_and_lasting_disagreement_is_reported(
    journal: Journal,
) -> None:
    pipeline = ScoringPipeline(
        ScoringConfig.model_validate(
            {
                "calibration_rows": 64,
                "max_batch_delay_ms": 0,
                "disagreement": {"min_duration_s": 20, "max_age_s": 10},
            }
        )
    )
    seen = Collector()
    pipeline.add_sink(seen)
    frame = pump_frame(4, 200, fault_from=100)
    async with running(pipeline):
        for i in range(20):
            # Ten samples, then the node's own inference over them (one seq each).
            [b] = batches(
                "pump-1", frame[i * 10 : i * 10 + 10], t0_ms=T0 + i * 10_000, first_seq=i * 11 + 1
            )
            # The node's own model keeps saying "normal" (raw 0.1 of threshold 1.056).
            t = T0 + (i * 10 + 9) * 1000
            inf = NodeInference(
                "pump-1",
                1,
                b.last_seq + 1,
                TimeBase.UNIX_MS,
                t,
                "node_model",
                "1.0.0",
                b"\1" * 8,
                0.1,
                0,
                800,
            )
            _commit(journal, pipeline, [envelope(b), envelope(inf)])
            await _until(lambda: pipeline.worker.qsize() == 0)
            await asyncio.sleep(0)
        await _until(lambda: pipeline.stats.gateway_scores >= 200 - 64)
    node_scores = [s for s in seen.of(AnomalyScore) if s.source is ScoreSource.NODE]
    assert len(node_scores) == 20
    assert node_scores[0].score == pytest.approx(0.1 / 1.056067)
    disagreements = seen.of(Disagreement)
    assert disagreements, "gateway anomalous for 100 s while the node says normal"
    assert all(d.t_ms >= T0 + 100_000 + 20_000 for d in disagreements)
    assert all(d.gateway_score >= 1.0 > d.node_score for d in disagreements)
    state = pipeline.fusion.scores("pump-1")
    assert state is not None
    assert state.gateway is not None
    assert state.node is not None


async def test_non_finite_values_are_readings_but_not_scored(journal: Journal) -> None:
    pipeline = ScoringPipeline(ScoringConfig(calibration_rows=64))
    frame = pump_frame(5, 10)
    frame[3, 2] = float("nan")
    [b] = batches("pump-1", frame, per_batch=10)
    _commit(journal, pipeline, [envelope(b)])
    assert pipeline.stats.nonfinite_rows == 1
    assert pipeline.worker.qsize() == 9


def test_scoring_config_rejects_unknown_keys_and_bad_values() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="calibraton_rows"):
        ScoringConfig.model_validate({"calibraton_rows": 100})
    with pytest.raises(ValidationError, match="missing_channels"):
        ScoringConfig.model_validate({"missing_channels": "zero"})
    with pytest.raises(ValidationError, match="queue_rows"):
        ScoringConfig.model_validate({"queue_rows": 0})
