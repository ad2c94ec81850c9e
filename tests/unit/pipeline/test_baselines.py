"""Node baselines survive a restart: a recreated pipeline on the same data dir scores a
calibrated node's next row at once, with the score the first pipeline would have given.
A baseline that does not fit (another channel layout, a damaged file) is ignored, logged,
and the node recalibrates; nothing is written when persistence is off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from gateway.events import AnomalyScore, Observation, ScoreSource
from gateway.pipeline import ScoringConfig, ScoringPipeline
from gateway.protocol.messages import Channel, ReadingBatch
from gateway.store.baselines import BaselineStore, baselines_path_for
from gateway.store.journal import Journal
from tests.unit.pipeline.helpers import (
    SKAB_CHANNELS,
    batches,
    envelope,
    pump_frame,
    running,
    signed_copy,
    write_key_pair,
)

CALIBRATION = 64
T0 = 1_700_000_000_000


class Gateway:
    """A journal and a pipeline over one data dir, as ``gateway.app`` wires them."""

    def __init__(self, data_dir: Path, **config: object) -> None:
        self.journal = Journal(data_dir / "journal.db", synchronous="NORMAL")
        self.journal.open()
        cfg = ScoringConfig.model_validate(
            {"calibration_rows": CALIBRATION, "max_batch_delay_ms": 0, **config}
        )
        self.baselines_path = baselines_path_for(data_dir / "journal.db")
        self.pipeline = ScoringPipeline(cfg, baselines_path=self.baselines_path)
        self.scores: list[AnomalyScore] = []
        self.pipeline.add_sink(self._sink)

    def _sink(self, observations: Sequence[Observation]) -> None:
        self.scores.extend(o for o in observations if isinstance(o, AnomalyScore))

    async def feed(self, msgs: Sequence[ReadingBatch]) -> None:
        """Commit ``msgs`` one by one and wait until the scorer has taken every row."""
        target = self.pipeline.worker.stats.queued_rows
        for msg in msgs:
            self.pipeline.on_commit(self.journal.commit([envelope(msg)]))
            target += len(msg.samples)
        async with asyncio.timeout(10):
            while self.pipeline.worker.stats.scored_rows < target:
                await asyncio.sleep(0.005)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ScoringPipeline]:
        try:
            async with running(self.pipeline) as pipeline:
                yield pipeline
        finally:
            self.journal.close()


FRAME = pump_frame(11, 96)
# The node's first 64 rows (its baseline), then 32 more, in the same batches every time.
HEAD = batches("pump-1", FRAME[:CALIBRATION], per_batch=16)
TAIL = batches(
    "pump-1", FRAME[CALIBRATION:], per_batch=16, t0_ms=T0 + CALIBRATION * 1000, first_seq=65
)


async def _scores_without_restart(tmp_path: Path) -> list[AnomalyScore]:
    gw = Gateway(tmp_path / "reference", persist_baselines=False)
    async with gw.running():
        await gw.feed(HEAD + TAIL)
    return gw.scores


async def test_a_restarted_pipeline_scores_a_calibrated_node_at_once_with_the_same_scores(
    tmp_path: Path,
) -> None:
    first = Gateway(tmp_path / "var")
    async with first.running() as pipeline:
        await first.feed(HEAD)
    assert first.scores == []  # calibrating
    assert pipeline.scorer.baseline_stats.saved == 1

    second = Gateway(tmp_path / "var")
    async with second.running() as pipeline:
        await second.feed(TAIL)
    assert pipeline.scorer.baseline_stats.restored == 1
    assert pipeline.scorer.baseline_stats.saved == 0  # nothing new to write
    assert [s.t_ms for s in second.scores] == [T0 + i * 1000 for i in range(CALIBRATION, 96)]
    expected = await _scores_without_restart(tmp_path)
    np.testing.assert_allclose(
        [s.score for s in second.scores], [s.score for s in expected], rtol=0
    )


async def test_a_baseline_recorded_for_another_channel_layout_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = Gateway(tmp_path / "var")
    async with first.running():
        await first.feed(HEAD)

    # After the restart the node sends the fleet's names for five of the channels: the rows
    # would map to the same model channels, but the model's other three are now held at
    # baseline, so the stored rows mean something else.
    fleet = (
        Channel("vib_rms", "g"),
        Channel("current", "A"),
        Channel("pressure", "bar"),
        Channel("temperature", "C"),
        Channel("flow", "l/min"),
    )
    cols = [0, 2, 3, 4, 7]
    renamed = batches("pump-1", FRAME[:, cols], per_batch=16, channels=fleet, first_seq=200)
    second = Gateway(tmp_path / "var")
    with caplog.at_level(logging.WARNING, logger="gateway.pipeline.scoring"):
        async with second.running() as pipeline:
            await second.feed(renamed)
    assert pipeline.scorer.baseline_stats.ignored == 1
    assert any(
        "pump-1" in r.getMessage() and "stored baseline not used" in r.getMessage()
        for r in caplog.records
    )
    # Recalibrated: the first 64 rows are its new baseline, then it is scored.
    assert [s.t_ms for s in second.scores] == [T0 + i * 1000 for i in range(CALIBRATION, 96)]
    # Both baselines are kept, each under its own layout.
    stored = BaselineStore(second.baselines_path).load()
    assert sorted(len(b.rows[0]) for b in stored) == [8, 8]
    assert len({b.layout for b in stored}) == 2


async def test_a_baseline_of_another_length_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = Gateway(tmp_path / "var")
    async with first.running():
        await first.feed(HEAD)
    second = Gateway(tmp_path / "var", calibration_rows=80)
    with caplog.at_level(logging.WARNING, logger="gateway.pipeline.scoring"):
        async with second.running() as pipeline:
            await second.feed(TAIL)
    assert pipeline.scorer.baseline_stats.ignored == 1
    assert second.scores == []  # 32 rows into a new 80-row baseline
    assert "64 rows" in caplog.text


async def test_a_garbage_baselines_file_means_recalibration_and_a_log_line_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "var").mkdir()
    garbage = baselines_path_for(tmp_path / "var" / "journal.db")
    garbage.write_bytes(np.random.default_rng(3).bytes(3000))
    gw = Gateway(tmp_path / "var")
    with caplog.at_level(logging.WARNING, logger="gateway.store.baselines"):
        async with gw.running() as pipeline:
            await gw.feed(HEAD + TAIL)
    assert "cannot be read" in caplog.text
    assert [s.t_ms for s in gw.scores] == [T0 + i * 1000 for i in range(CALIBRATION, 96)]
    # The damaged file is kept for a post-mortem; the new baseline went to a fresh one.
    assert garbage.with_name("baselines.db.corrupt").read_bytes()[:16] != b"SQLite format 3\0"
    assert pipeline.scorer.baseline_stats.saved == 1
    [stored] = BaselineStore(garbage).load()
    assert stored.rows == tuple(tuple(r) for r in FRAME[:CALIBRATION].tolist())


async def test_persist_baselines_false_writes_nothing(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "var", persist_baselines=False)
    async with gw.running() as pipeline:
        await gw.feed(HEAD + TAIL)
    assert len(gw.scores) == 96 - CALIBRATION
    assert pipeline.scorer.baseline_stats.saved == 0
    assert not gw.baselines_path.exists()


async def test_a_baseline_recorded_under_one_model_serves_a_swapped_in_model_after_restart(
    tmp_path: Path,
) -> None:
    key, pub = write_key_pair(tmp_path)
    v21 = signed_copy(tmp_path / "v21", key, version="2.1.0", sequence=2, threshold_factor=0.5)
    first = Gateway(tmp_path / "var", public_key_path=pub)
    async with first.running() as pipeline:
        await first.feed(HEAD[:2])
        await pipeline.swap_model(v21)
        await first.feed(HEAD[2:])  # the baseline completes under the swapped-in model
    [stored] = BaselineStore(first.baselines_path).load()
    assert stored.model_version == "2.1.0"

    second = Gateway(tmp_path / "var", public_key_path=pub, model_path=v21)
    async with second.running():
        await second.feed(TAIL)
    assert len(second.scores) == 96 - CALIBRATION
    assert {s.model_version for s in second.scores} == {"2.1.0"}


def test_a_stored_baseline_round_trips_bit_for_bit_and_damaged_records_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.store.baselines import StoredBaseline

    store = BaselineStore(tmp_path / "baselines.db")
    rows = tuple(tuple(r) for r in pump_frame(5, 20).tolist())
    assert store.save([StoredBaseline("a", "L1", rows, "2.0.0"), StoredBaseline("b", "L1", rows)])
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE baselines SET data = x'00' WHERE node_id = 'b'")
    conn.close()
    with caplog.at_level(logging.WARNING, logger="gateway.store.baselines"):
        [a] = store.load()
    assert (a.node_id, a.layout, a.rows, a.model_version) == ("a", "L1", rows, "2.0.0")
    assert "b: stored baseline" in caplog.text
    assert "damaged" in caplog.text


def test_skab_layout_names_every_model_channel_as_fed() -> None:
    from gateway.pipeline.windows import ChannelMapper
    from tinymodels.runtime import DEFAULT_GATEWAY_MODEL, load_model

    cfg = load_model(DEFAULT_GATEWAY_MODEL).feature_config
    assert cfg is not None
    mapper = ChannelMapper(cfg, {c.name: c.name for c in SKAB_CHANNELS}, "baseline")
    layout = mapper.layout(SKAB_CHANNELS)
    assert layout == mapper.layout(SKAB_CHANNELS)
    assert "null" not in layout
    assert all(f'"{c.name}"' in layout for c in SKAB_CHANNELS)


async def test_after_a_restart_a_shadow_model_also_scores_the_node_on_its_stored_baseline(
    tmp_path: Path,
) -> None:
    key, pub = write_key_pair(tmp_path)
    candidate = signed_copy(tmp_path / "v21", key, version="2.1.0", sequence=2)
    first = Gateway(tmp_path / "var")
    async with first.running():
        await first.feed(HEAD)
    second = Gateway(tmp_path / "var", public_key_path=pub, shadow_model_path=candidate)
    async with second.running() as pipeline:
        await second.feed(TAIL)
        summary = pipeline.shadow_summary()
    expected = [T0 + i * 1000 for i in range(CALIBRATION, 96)]
    assert [s.t_ms for s in second.scores if s.source is ScoreSource.GATEWAY] == expected
    assert [s.t_ms for s in second.scores if s.source is ScoreSource.SHADOW] == expected
    assert summary is not None
    assert summary.rows == 96 - CALIBRATION
    assert summary.max_abs_diff == 0.0  # same artifact, same baseline
