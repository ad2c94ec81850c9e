"""The gateway's model runtime: shipped artifacts load and predict on LiteRT, without TensorFlow."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinymodels.gateway_features import causal_windows, smooth
from tinymodels.runtime import (
    DEFAULT_GATEWAY_MODEL,
    ModelLoadError,
    load_model,
)

ARTIFACTS = DEFAULT_GATEWAY_MODEL.parent


def _pump_frame(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Rows shaped like SKAB's eight channels around their normal operating point."""
    centre = np.array([0.21, 0.27, 2.1, 0.3, 89.0, 28.0, 233.0, 125.0])
    spread = np.array([0.005, 0.004, 0.4, 0.2, 0.5, 0.5, 10.0, 1.5])
    return centre + spread * rng.standard_normal((rows, 8))


def test_shipped_manifest_matches_its_artifact() -> None:
    for name in ("gateway_model", "node_model"):
        blob = (ARTIFACTS / f"{name}.tflite").read_bytes()
        manifest = json.loads((ARTIFACTS / f"{name}.json").read_text())
        assert manifest["name"] == name
        assert manifest["sha256"] == hashlib.sha256(blob).hexdigest()
        assert manifest["size_bytes"] == len(blob)


def test_gateway_model_predicts_float_batches_through_int8() -> None:
    model = load_model()
    assert model.manifest["quantization"] == "int8"
    n_in = model.input_features
    feats = model.manifest["features"]
    assert n_in == feats["window"] * len(feats["model_channels"])
    x = np.random.default_rng(0).standard_normal((37, n_in)).astype(np.float32)
    y = model.predict(x)
    assert y.shape == (37, n_in)
    assert y.dtype == np.float32
    # Batches of different sizes give the same rows (the interpreter is resized, not confused).
    np.testing.assert_array_equal(model.predict(x[:5]), y[:5])
    # An autoencoder of normal data reconstructs zeros (the fit-part mean) better than noise.
    zeros = np.zeros((1, n_in), np.float32)
    assert np.mean((model.predict(zeros) - zeros) ** 2) < np.mean((y - x) ** 2)


def test_score_frame_flags_a_level_shift_after_the_fit_rows() -> None:
    rng = np.random.default_rng(1)
    frame = _pump_frame(rng, 700)
    frame[550:, 7] -= 15.0  # flow collapses, as when a valve closes
    frame[550:, 3] += 1.0
    result = load_model().score_frame(frame, fit_rows=400)
    assert result.scores.shape == (700,)
    assert result.predictions[:400].mean() < 0.05
    assert result.predictions[400:550].mean() < 0.2
    assert result.predictions[560:].mean() > 0.9


def test_score_frame_rejects_a_frame_with_the_wrong_channels() -> None:
    with pytest.raises(ValueError, match="frame"):
        load_model().score_frame(np.zeros((500, 3)))


def test_a_tampered_artifact_is_refused(tmp_path: Path) -> None:
    shutil.copy(ARTIFACTS / "gateway_model.json", tmp_path / "m.json")
    blob = bytearray((ARTIFACTS / "gateway_model.tflite").read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / "m.tflite").write_bytes(bytes(blob))
    with pytest.raises(ModelLoadError, match="sha256"):
        load_model(tmp_path / "m.tflite")


def test_a_missing_manifest_is_refused(tmp_path: Path) -> None:
    shutil.copy(ARTIFACTS / "gateway_model.tflite", tmp_path / "m.tflite")
    with pytest.raises(ModelLoadError, match="manifest"):
        load_model(tmp_path / "m.tflite")


def test_runtime_does_not_import_tensorflow() -> None:
    code = (
        "import sys, numpy as np; from tinymodels.runtime import load_model; "
        "m = load_model(); m.predict(np.zeros((1, m.input_features), np.float32)); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, capture_output=True)


def test_causal_windows_end_at_their_row_and_pad_with_the_first_row() -> None:
    z = np.arange(10, dtype=np.float32).reshape(5, 2)
    w = causal_windows(z, 3)
    assert w.shape == (5, 6)
    assert w[0].tolist() == [0, 1, 0, 1, 0, 1]
    assert w[4].tolist() == [4, 5, 6, 7, 8, 9]


def test_smoothing_is_a_causal_moving_mean() -> None:
    e = np.array([0, 0, 3, 0, 0], dtype=np.float32)
    np.testing.assert_allclose(smooth(e, 3), [0, 0, 1, 1, 1])
