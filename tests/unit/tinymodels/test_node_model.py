"""The node model: fits the MCU budget in the real TFLite Micro, agrees with LiteRT, detects faults."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinymodels.node_features import (
    FEATURE_NAMES,
    N_FEATURES,
    VIB_SAMPLES,
    extract_features,
    normalise,
    reconstruction_score,
)
from tinymodels.pump_signals import FAULTS, pump_frame
from tinymodels.runtime import ARTIFACTS_DIR, load_model
from tinymodels.tflm import measure_arena, run_int8

pytest.importorskip("tflite_micro")

MODEL = ARTIFACTS_DIR / "node_model.tflite"
FLASH_BUDGET = 32 * 1024
ARENA_BUDGET = 16 * 1024


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(MODEL.with_suffix(".json").read_text())


def _features(seed: int, n: int, fault: str | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = [pump_frame(rng, fault) for _ in range(n)]
    return np.stack(
        [extract_features(f.vibration, f.current, f.pressure, f.temperature) for f in frames]
    )


def test_node_model_fits_32k_flash_and_16k_arena_measured_in_tflm(manifest: dict) -> None:
    blob = MODEL.read_bytes()
    assert len(blob) <= FLASH_BUDGET
    report = measure_arena(blob)
    assert 0 < report.total_bytes <= ARENA_BUDGET
    assert manifest["arena_bytes_measured"] == report.total_bytes
    assert manifest["arena_bytes"] >= report.total_bytes


def test_tflm_and_litert_agree_within_one_lsb_on_int8_outputs(manifest: dict) -> None:
    feats = normalise(
        _features(11, 64), manifest["features"]["centre"], manifest["features"]["scale"]
    )
    q_in = manifest["input"]
    x_q = np.clip(np.round(feats / q_in["scale"]) + q_in["zero_point"], -128, 127).astype(np.int8)
    micro = run_int8(MODEL.read_bytes(), x_q, manifest["arena_bytes"])

    lite = load_model(MODEL, delegates=False).invoke_raw(x_q).astype(np.int16)
    xnnpack = load_model(MODEL).invoke_raw(x_q).astype(np.int16)
    assert micro.shape == (64, N_FEATURES)
    assert np.max(np.abs(micro.astype(np.int16) - lite)) <= 1
    # XNNPACK's rounding differs a little more after three layers; still a few LSB at most.
    assert np.max(np.abs(micro.astype(np.int16) - xnnpack)) <= 2


def test_features_have_the_documented_order_and_are_deterministic() -> None:
    f = pump_frame(np.random.default_rng(3))
    a = extract_features(f.vibration, f.current, f.pressure, f.temperature)
    b = extract_features(f.vibration.copy(), f.current, f.pressure, f.temperature)
    assert a.shape == (N_FEATURES,) == (len(FEATURE_NAMES),)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert a[FEATURE_NAMES.index("current_mean")] == pytest.approx(f.current.mean(), rel=1e-6)
    with pytest.raises(ValueError, match="vibration"):
        extract_features(np.zeros(VIB_SAMPLES - 1), [1.0], [1.0], [1.0])


def test_shipped_threshold_separates_normal_from_faulty_frames(manifest: dict) -> None:
    lite = load_model(MODEL)
    centre, scale = manifest["features"]["centre"], manifest["features"]["scale"]

    def scores(x: np.ndarray) -> np.ndarray:
        xn = normalise(x, centre, scale)
        return reconstruction_score(xn, lite.predict(xn))

    normal = scores(_features(101, 200))
    assert np.mean(normal > manifest["threshold"]) < 0.03
    for i, fault in enumerate(FAULTS):
        faulty = scores(_features(200 + i, 50, fault))
        assert np.mean(faulty > manifest["threshold"]) > 0.8, fault
