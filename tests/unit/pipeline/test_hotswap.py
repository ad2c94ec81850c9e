"""Hot-swap: a verified model takes over without a restart; anything else is refused and the
running model keeps scoring. Shadow mode scores with both and summarises the difference."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import ModelError
from gateway.events import AnomalyScore, Observation, ScoreSource
from gateway.pipeline import ScoringConfig, ScoringPipeline
from gateway.pipeline.windows import Row
from gateway.protocol.signed_manifest import VerificationError
from tests.unit.pipeline.helpers import pump_frame, running, signed_copy, write_key_pair


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[Ed25519PrivateKey, Path]:
    return write_key_pair(tmp_path)


def _pipeline(pub: Path | None, **extra: object) -> tuple[ScoringPipeline, list[AnomalyScore]]:
    config = ScoringConfig.model_validate(
        {"calibration_rows": 64, "max_batch_delay_ms": 0, "public_key_path": pub, **extra}
    )
    pipeline = ScoringPipeline(config)
    scores: list[AnomalyScore] = []

    def sink(obs: Sequence[Observation]) -> None:
        scores.extend(
            o for o in obs if isinstance(o, AnomalyScore) and o.source is not ScoreSource.FUSED
        )

    pipeline.add_sink(sink)
    return pipeline, scores


async def _feed(pipeline: ScoringPipeline, frame: np.ndarray, start: int, stop: int) -> None:
    rows = [Row("pump-1", i * 1000, tuple(frame[i])) for i in range(start, stop)]
    target = pipeline.worker.stats.scored_rows + len(rows)
    pipeline.worker.submit(rows)
    async with asyncio.timeout(10):
        while pipeline.worker.stats.scored_rows < target:
            await asyncio.sleep(0.01)


async def test_signed_model_swaps_in_without_recalibration(
    tmp_path: Path, key_pair: tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = key_pair
    new_path = signed_copy(tmp_path / "v21", key, version="2.1.0", sequence=2, threshold_factor=0.5)
    pipeline, scores = _pipeline(pub)
    frame = pump_frame(7, 300)
    async with running(pipeline):
        await _feed(pipeline, frame, 0, 150)
        info = await pipeline.swap_model(new_path)
        await _feed(pipeline, frame, 150, 300)
    assert info.version == "2.1.0"
    assert info.signed
    assert info.sequence == 2
    assert pipeline.model_info == info
    before = [s for s in scores if s.t_ms < 150_000]
    after = [s for s in scores if s.t_ms >= 150_000]
    assert {s.model_version for s in before} == {"2.0.0"}
    # Every row after the swap is scored at once (the baseline was kept), by the new model,
    # whose threshold factor of 0.5 doubles the score in threshold units.
    assert [s.t_ms for s in after] == [i * 1000 for i in range(150, 300)]
    assert {s.model_version for s in after} == {"2.1.0"}
    reference, ref_scores = _pipeline(None)
    async with running(reference):
        await _feed(reference, frame, 0, 300)
    expected = [2 * s.score for s in ref_scores if s.t_ms >= 150_000]
    np.testing.assert_allclose([s.score for s in after], expected, rtol=1e-4)


@pytest.mark.parametrize(
    ("tamper", "check"),
    [
        ("artifact_byte", "sha256"),
        ("manifest_edit", "signature"),
        ("other_key", "key"),
    ],
)
async def test_tampered_model_is_refused_and_the_running_one_keeps_scoring(
    tmp_path: Path, key_pair: tuple[Ed25519PrivateKey, Path], tamper: str, check: str
) -> None:
    key, pub = key_pair
    signer = Ed25519PrivateKey.generate() if tamper == "other_key" else key
    path = signed_copy(tmp_path / "bad", signer, version="2.1.0", sequence=2)
    if tamper == "artifact_byte":
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 0x01
        path.write_bytes(bytes(blob))
    elif tamper == "manifest_edit":
        manifest_json = path.with_suffix(".manifest.json")
        path.with_suffix(".manifest.cbor").unlink()
        manifest_json.write_text(manifest_json.read_text().replace('"2.1.0"', '"9.9.9"'))
    pipeline, scores = _pipeline(pub)
    frame = pump_frame(8, 200)
    async with running(pipeline):
        await _feed(pipeline, frame, 0, 100)
        with pytest.raises(VerificationError) as refused:
            await pipeline.swap_model(path)
        await _feed(pipeline, frame, 100, 200)
    assert refused.value.check == check
    assert pipeline.model_info.version == "2.0.0"
    assert {s.model_version for s in scores} == {"2.0.0"}
    assert len(scores) == 200 - 64


async def test_unsigned_model_or_missing_public_key_is_refused(
    tmp_path: Path, key_pair: tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = key_pair
    path = signed_copy(tmp_path / "m", key, version="2.1.0", sequence=2)
    pipeline, _ = _pipeline(None)
    async with running(pipeline):
        with pytest.raises(ModelError, match="public_key_path is not set"):
            await pipeline.swap_model(path)
    path.with_suffix(".manifest.cbor").unlink()
    path.with_suffix(".manifest.json").unlink()
    pipeline, _ = _pipeline(pub)
    async with running(pipeline):
        with pytest.raises(ModelError, match="no signed manifest"):
            await pipeline.swap_model(path)
    assert pipeline.model_info.version == "2.0.0"


async def test_rollback_to_a_lower_sequence_is_refused(
    tmp_path: Path, key_pair: tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = key_pair
    v3 = signed_copy(tmp_path / "v3", key, version="2.3.0", sequence=3)
    v2 = signed_copy(tmp_path / "v2", key, version="2.2.0", sequence=2)
    pipeline, _ = _pipeline(pub)
    async with running(pipeline):
        await pipeline.swap_model(v3)
        with pytest.raises(ModelError, match="rollback refused"):
            await pipeline.swap_model(v2)
    assert pipeline.model_info.version == "2.3.0"


async def test_shadow_model_scores_alongside_and_summarises_the_difference(
    tmp_path: Path, key_pair: tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = key_pair
    shadow_path = signed_copy(
        tmp_path / "s", key, version="2.1.0-rc1", sequence=2, threshold_factor=0.5
    )
    pipeline, scores = _pipeline(pub, shadow_model_path=shadow_path)
    frame = pump_frame(9, 300, fault_from=250)
    async with running(pipeline):
        await _feed(pipeline, frame, 0, 300)
        summary = pipeline.shadow_summary()
        final = await pipeline.stop_shadow()
    gateway = [s for s in scores if s.source is ScoreSource.GATEWAY]
    shadow = [s for s in scores if s.source is ScoreSource.SHADOW]
    assert len(gateway) == len(shadow) == 300 - 64
    assert {s.model_version for s in shadow} == {"2.1.0-rc1"}
    assert pipeline.model_info.version == "2.0.0"  # the shadow never takes over by itself
    np.testing.assert_allclose([s.score for s in shadow], [2 * g.score for g in gateway], rtol=1e-4)
    assert summary is not None
    assert summary == final
    assert summary.rows == 300 - 64
    assert summary.shadow_version == "2.1.0-rc1"
    diffs = [abs(s.score - g.score) for s, g in zip(shadow, gateway, strict=True)]
    assert summary.mean_abs_diff == pytest.approx(float(np.mean(diffs)), rel=1e-4)
    assert summary.max_abs_diff == pytest.approx(max(diffs), rel=1e-4)
    assert summary.shadow_anomalous_rows >= summary.primary_anomalous_rows
    assert 0.0 < summary.decision_agreement < 1.0
    assert pipeline.shadow_summary() is None


async def test_a_model_for_other_channels_cannot_replace_the_running_one(
    tmp_path: Path, key_pair: tuple[Ed25519PrivateKey, Path]
) -> None:
    def speed_for_voltage(runtime: dict[str, Any]) -> None:
        runtime["features"]["channels"][6] = "Speed"
        runtime["features"]["model_channels"][4] = "Speed"

    key, pub = key_pair
    path = signed_copy(tmp_path / "m", key, version="3.0.0", sequence=2, edit=speed_for_voltage)
    pipeline, _ = _pipeline(pub)
    async with running(pipeline):
        with pytest.raises(ModelError, match="needs a restart"):
            await pipeline.swap_model(path)
    assert pipeline.model_info.version == "2.0.0"
