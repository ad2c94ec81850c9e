"""Model trust, written as the attacks: edited thresholds, settings that were never signed,
a rollback after a restart, an older model under a new name. Each is refused with a reason
naming the file, and the running model keeps scoring (and alerting)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.alerts.system import SystemAlert
from gateway.errors import ModelError
from gateway.events import AlertEvent, AlertEventKind, AnomalyScore, Observation, ScoreSource
from gateway.pipeline import ScoringConfig, ScoringPipeline
from gateway.pipeline.hotswap import PACKAGE_PUBLIC_KEY, ModelInfo, load_package
from gateway.pipeline.model_inbox import MAX_BUNDLE_BYTES, ModelInbox
from gateway.pipeline.model_state import ModelState
from gateway.pipeline.windows import Row
from gateway.protocol.signed_manifest import VerificationError
from tests.unit.pipeline.helpers import pump_frame, running, signed_copy, write_key_pair
from tinymodels.runtime import DEFAULT_GATEWAY_MODEL

SILENCE = 1e6  # a threshold factor no score ever reaches


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[Ed25519PrivateKey, Path]:
    return write_key_pair(tmp_path)


def _pipeline(
    pub: Path | None, state: ModelState | None = None, **extra: object
) -> tuple[ScoringPipeline, list[AnomalyScore]]:
    config = ScoringConfig.model_validate(
        {"calibration_rows": 64, "max_batch_delay_ms": 0, "public_key_path": pub, **extra}
    )
    pipeline = ScoringPipeline(config, model_state=state)
    scores: list[AnomalyScore] = []

    def sink(obs: Sequence[Observation]) -> None:
        scores.extend(
            o for o in obs if isinstance(o, AnomalyScore) and o.source is ScoreSource.GATEWAY
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


def _edit_threshold(model: Path, factor: float) -> None:
    settings = model.with_suffix(".json")
    doc = json.loads(settings.read_text())
    doc["features"]["threshold_factor"] = factor
    settings.write_text(json.dumps(doc))


# -- the runtime settings are covered by the signature -----------------------------------------


async def test_a_threshold_edited_after_signing_is_refused_and_alerts_still_fire(
    tmp_path: Path, key_pair: tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = key_pair
    tampered = signed_copy(tmp_path / "tampered", key, version="2.1.0", sequence=2)
    _edit_threshold(tampered, SILENCE)
    pipeline, scores = _pipeline(pub)
    frame = pump_frame(11, 400, fault_from=250)
    async with running(pipeline):
        await _feed(pipeline, frame, 0, 200)
        with pytest.raises(VerificationError) as refused:
            await pipeline.swap_model(tampered)
        await _feed(pipeline, frame, 200, 400)
    assert refused.value.check == "runtime"
    message = str(refused.value)
    assert str(tampered.with_suffix(".json")) in message
    assert "changed after signing" in message
    assert pipeline.model_info.version == "2.0.0"
    # The fault is still seen as anomalous: the edited threshold never took effect.
    assert any(s.score >= 1.0 for s in scores if s.t_ms >= 260_000)


async def test_the_same_threshold_signed_by_the_key_holder_would_silence_the_fault(
    tmp_path: Path, key_pair: tuple[Ed25519PrivateKey, Path]
) -> None:
    # The control for the test above: 1e6 really silences, so only the signature stops it.
    key, pub = key_pair
    signed = signed_copy(
        tmp_path / "signed", key, version="2.1.0", sequence=2, threshold_factor=SILENCE
    )
    pipeline, scores = _pipeline(pub)
    frame = pump_frame(11, 400, fault_from=250)
    async with running(pipeline):
        await _feed(pipeline, frame, 0, 200)
        await pipeline.swap_model(signed)
        await _feed(pipeline, frame, 200, 400)
    assert not any(s.score >= 1.0 for s in scores if s.t_ms >= 200_000)


async def test_settings_the_signature_does_not_cover_are_refused(
    tmp_path: Path, key_pair: tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = key_pair
    # Signed the old way: the manifest names the artifact but not its settings.
    unsigned_settings = signed_copy(
        tmp_path / "m", key, version="2.1.0", sequence=2, sign_runtime=False
    )
    pipeline, _ = _pipeline(pub)
    async with running(pipeline):
        with pytest.raises(VerificationError) as refused:
            await pipeline.swap_model(unsigned_settings)
    assert refused.value.check == "runtime"
    assert "gateway_model.json" in str(refused.value)
    assert "not covered by the signature" in str(refused.value)
    assert pipeline.model_info.version == "2.0.0"


def test_the_shipped_model_is_verified_with_its_package_key() -> None:
    model, info = load_package()
    assert info.family == "gateway_model"
    assert info.sha256 == model.manifest["sha256"]
    assert not info.signed  # the package's key is not the site's: no site floor applies


def test_an_edited_threshold_in_a_copy_of_the_shipped_model_fails_the_package_check(
    tmp_path: Path,
) -> None:
    for src in (*DEFAULT_GATEWAY_MODEL.parent.glob("gateway_model.*"), PACKAGE_PUBLIC_KEY):
        shutil.copy(src, tmp_path / src.name)
    copy = tmp_path / DEFAULT_GATEWAY_MODEL.name
    load_package(copy, tmp_path / PACKAGE_PUBLIC_KEY.name)  # intact: loads
    _edit_threshold(copy, SILENCE)
    with pytest.raises(ModelError, match="changed after signing") as refused:
        load_package(copy, tmp_path / PACKAGE_PUBLIC_KEY.name)
    assert "python -m firmware_tools.package_signing" in str(refused.value)


def test_a_model_other_than_the_shipped_one_needs_the_site_key_to_start(
    tmp_path: Path, key_pair: tuple[Ed25519PrivateKey, Path]
) -> None:
    key, _ = key_pair
    model = signed_copy(tmp_path / "m", key, version="2.1.0", sequence=2)
    with pytest.raises(ModelError, match="public_key_path is not set"):
        _pipeline(None, model_path=model)


# -- anti-rollback: persisted per family --------------------------------------------------------


async def test_a_rollback_after_a_restart_is_refused(
    tmp_path: Path, key_pair: tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = key_pair
    v5 = signed_copy(tmp_path / "v5", key, version="2.5.0", sequence=5)
    v3 = signed_copy(tmp_path / "v3", key, version="2.3.0", sequence=3)
    state_dir = tmp_path / "var" / "gateway-model"

    first, _ = _pipeline(pub, ModelState(state_dir))
    async with running(first):
        await first.swap_model(v5)

    # Restart: the swapped-in model is what runs, and its floor still holds.
    second, scores = _pipeline(pub, ModelState(state_dir))
    assert (second.model_info.version, second.model_info.sequence) == ("2.5.0", 5)
    frame = pump_frame(12, 200)
    async with running(second):
        with pytest.raises(ModelError, match="rollback refused"):
            await second.swap_model(v3)
        await _feed(second, frame, 0, 200)
    assert {s.model_version for s in scores} == {"2.5.0"}
    assert len(scores) == 200 - 64

    # Even with the installed copy gone, the older model does not start in its place.
    shutil.rmtree(state_dir / "installed")
    with pytest.raises(ModelError, match="anti-rollback floor"):
        _pipeline(pub, ModelState(state_dir), model_path=v3)
    third, _ = _pipeline(pub, ModelState(state_dir), model_path=v5)  # the floor's own: fine
    assert third.model_info.sequence == 5


async def test_a_renamed_older_model_is_refused(
    tmp_path: Path, key_pair: tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = key_pair
    v5 = signed_copy(tmp_path / "v5", key, version="2.5.0", sequence=5)
    # The same line under a new name: the family keeps the floor.
    renamed = signed_copy(
        tmp_path / "renamed", key, version="3.0.0", sequence=4, name="pump_detector",
        family="gateway_model",
    )  # fmt: skip
    # An old model of another name and no family (signed before families existed).
    other_line = signed_copy(tmp_path / "old", key, version="1.0.0", sequence=1, name="gw_v1")
    state = ModelState(tmp_path / "var" / "gateway-model")
    pipeline, _ = _pipeline(pub, state)
    async with running(pipeline):
        await pipeline.swap_model(v5)
        with pytest.raises(ModelError, match="rollback refused"):
            await pipeline.swap_model(renamed)
        with pytest.raises(ModelError, match="family 'gw_v1' is not the running model's"):
            await pipeline.swap_model(other_line)
    assert pipeline.model_info.sequence == 5
    assert state.floor("gateway_model") is not None


async def test_an_allowed_family_switch_keeps_each_familys_floor(
    tmp_path: Path, key_pair: tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = key_pair
    v5 = signed_copy(tmp_path / "v5", key, version="2.5.0", sequence=5)
    other = signed_copy(tmp_path / "b", key, version="1.0.0", sequence=1, family="pump_line")
    back = signed_copy(tmp_path / "back", key, version="2.4.0", sequence=4)
    state_dir = tmp_path / "var" / "gateway-model"
    families = ("gateway_model", "pump_line")
    pipeline, _ = _pipeline(pub, ModelState(state_dir), model_families=families)
    async with running(pipeline):
        await pipeline.swap_model(v5)
        assert (await pipeline.swap_model(other)).family == "pump_line"
    restarted, _ = _pipeline(pub, ModelState(state_dir), model_families=families)
    async with running(restarted):
        assert restarted.model_info.family == "pump_line"
        with pytest.raises(ModelError, match="not above 5"):
            await restarted.swap_model(back)  # back to the first family, below its floor


def test_a_damaged_state_file_is_set_aside_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "gateway-model"
    root.mkdir()
    (root / "state.json").write_text('{"format": 1, "floors": ')
    state = ModelState(root)
    assert state.floors() == {}
    assert "damaged" in state.problems[0]
    assert not (root / "state.json").exists()
    assert [p.name.startswith("state.json.damaged-") for p in root.iterdir()] == [True]


async def test_a_bundle_with_a_link_or_too_many_bytes_is_refused_unread(tmp_path: Path) -> None:
    state = ModelState(tmp_path / "gateway-model")
    swapped: list[Path] = []
    alerts: list[AlertEvent] = []

    async def swap(path: Path) -> ModelInfo:
        swapped.append(path)
        raise AssertionError("a refused bundle never reaches the swap")

    inbox = ModelInbox(state, swap, SystemAlert("gateway_model_rejected", alerts.append), 0.05)
    linked = state.incoming / "linked"
    linked.mkdir(parents=True)
    (linked / "gateway_model.tflite").symlink_to("/dev/zero")  # read it and the gateway hangs
    huge = state.incoming / "huge"
    huge.mkdir()
    for name in ("gateway_model.tflite", "gateway_model.json", "gateway_model.manifest.cbor"):
        (huge / name).write_bytes(b"")
    os.truncate(huge / "gateway_model.tflite", MAX_BUNDLE_BYTES + 1)  # sparse: no disk used
    results = await inbox.poll_once()
    assert swapped == []
    assert [r.info for r in results] == [None, None]
    reasons = sorted(r.reason or "" for r in results)
    assert "more than a gateway model bundle may hold" in reasons[0]
    assert "only regular files" in reasons[1]
    assert len(list(state.rejected.iterdir())) == 2
    assert [e.alert.rule for e in alerts if e.kind is AlertEventKind.RAISED] == [
        "gateway_model_rejected"
    ] * 2
