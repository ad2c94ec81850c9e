"""The gateway detector's statistics, ensemble and hold, on generated pump-like frames."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tinymodels.gateway_features import (
    FeatureConfig,
    combine,
    debounce,
    mset_residual,
    pca_statistics,
)
from tinymodels.runtime import DEFAULT_GATEWAY_MODEL, ModelLoadError, load_model

ARTIFACTS = DEFAULT_GATEWAY_MODEL.parent
TEMPERATURE = 4
THERMOCOUPLE = 5
FLOW = 7


def _pump_frame(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Rows shaped like SKAB's eight channels around their normal operating point."""
    centre = np.array([0.21, 0.27, 2.1, 0.3, 89.0, 28.0, 233.0, 125.0])
    spread = np.array([0.005, 0.004, 0.4, 0.2, 0.5, 0.5, 10.0, 1.5])
    return centre + spread * rng.standard_normal((rows, 8))


def _correlated(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Three standardised channels where the third follows the first two."""
    a = rng.standard_normal((rows, 2))
    c = a.sum(axis=1, keepdims=True) / np.sqrt(2) + 0.05 * rng.standard_normal((rows, 1))
    return np.hstack([a, c]).astype(np.float32)


def test_debounce_needs_hold_on_rows_to_raise_and_hold_off_rows_to_clear() -> None:
    raw = np.array([1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    assert debounce(raw, 1, 1).tolist() == raw.tolist()
    assert debounce(raw, 3, 3).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0]


def test_debounce_is_causal() -> None:
    raw = np.random.default_rng(3).random(200) > 0.4
    full = debounce(raw, 5, 20)
    assert debounce(raw[:120], 5, 20).tolist() == full[:120].tolist()


def test_hotelling_t2_grows_along_the_normal_axes_and_q_off_them() -> None:
    rng = np.random.default_rng(4)
    z = _correlated(rng, 600)
    z[500:520] *= 6.0  # bigger, but the third channel still follows: T2 not Q
    z[550:570, 2] += 4.0  # the relation breaks: Q
    t2, q = pca_statistics(z, 400, 0.9)
    assert np.median(t2[500:520]) > 10 * np.median(t2[:400])
    assert np.median(q[550:570]) > 50 * np.median(q[:400])
    assert np.median(q[500:520]) < np.median(q[550:570]) / 10


def test_mset_residual_is_small_on_known_states_and_large_on_new_ones() -> None:
    rng = np.random.default_rng(5)
    z = _correlated(rng, 600)
    z[500:, 2] -= 5.0
    r = mset_residual(z, 400, 80)
    assert r.shape == (600,)
    assert np.all(np.isfinite(r))
    assert np.median(r[500:]) > 5 * np.quantile(r[:400], 0.9)


def test_combine_expresses_each_statistic_in_fit_part_units() -> None:
    cfg = _cfg(components=("t2", "mset"), smooth_rows=1, threshold_quantile=1.0)
    base = np.ones(500, dtype=np.float32)
    base[450] = 3.0
    score = combine({"t2": base, "mset": 1000 * base}, cfg, 400)
    # Scale-free: a statistic 1000x larger weighs the same once divided by its fit max.
    np.testing.assert_allclose(score[:400], 1.0)
    assert score[450] == pytest.approx(3.0)


def test_feature_config_round_trips_and_reads_pre_ensemble_manifests() -> None:
    cfg = load_model().feature_config
    assert cfg is not None
    assert FeatureConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    old = {k: v for k, v in cfg.to_json().items() if k in _V1_KEYS}
    v1 = FeatureConfig.from_json(old)
    assert v1.components == ("ae",)
    assert v1.model_channels is None
    assert (v1.hold_on, v1.hold_off) == (1, 1)


def test_feature_config_rejects_unknown_components_and_channels() -> None:
    with pytest.raises(ValueError, match="components"):
        _cfg(components=("ae", "lstm"))
    with pytest.raises(ValueError, match="model_channels"):
        _cfg(model_channels=("Pressure", "Humidity"))


def test_shipped_detector_ignores_temperature_drift() -> None:
    rng = np.random.default_rng(6)
    frame = _pump_frame(rng, 900)
    # Both temperatures creep up by ~20 fit-part deviations, as they do over a SKAB run.
    ramp = np.linspace(0.0, 10.0, 900)
    frame[:, TEMPERATURE] += ramp
    frame[:, THERMOCOUPLE] += ramp
    result = load_model().score_frame(frame, fit_rows=400)
    assert result.predictions[400:].mean() < 0.05


def test_shipped_detector_raises_one_alarm_for_a_flow_drop_and_clears_after() -> None:
    rng = np.random.default_rng(7)
    frame = _pump_frame(rng, 1000)
    frame[600:750, FLOW] -= 15.0
    frame[600:750, 3] += 1.0
    result = load_model().score_frame(frame, fit_rows=400)
    assert set(result.components) == {"ae", "t2", "mset"}
    assert result.threshold == pytest.approx(1.0)
    assert result.predictions[400:595].mean() < 0.05
    assert result.predictions[620:750].all()
    assert not result.predictions[850:].any()
    rises = np.flatnonzero(np.diff(result.predictions[400:].astype(int)) == 1)
    assert rises.size == 1  # the hold stops flicker from opening several alarms


def test_row_scores_are_the_frame_scores() -> None:
    model = load_model()
    frame = _pump_frame(np.random.default_rng(8), 600)
    np.testing.assert_array_equal(
        model.row_scores(frame, 400), model.score_frame(frame, 400).scores
    )


def test_a_manifest_whose_features_do_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    shutil.copy(ARTIFACTS / "gateway_model.tflite", tmp_path / "m.tflite")
    manifest = json.loads((ARTIFACTS / "gateway_model.json").read_text())
    manifest["features"]["model_channels"] = manifest["features"]["channels"]
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="inputs"):
        load_model(tmp_path / "m.tflite")


_V1_KEYS = {
    "channels",
    "window",
    "fit_rows",
    "std_floor",
    "clip",
    "smooth_rows",
    "threshold_quantile",
    "threshold_factor",
}


def _cfg(**changes: object) -> FeatureConfig:
    base = FeatureConfig(
        channels=("Pressure", "Current", "Volume Flow RateRMS"),
        window=4,
        fit_rows=400,
        std_floor=(0.01, 0.01, 0.01),
        clip=10.0,
        smooth_rows=5,
        threshold_quantile=0.99,
        threshold_factor=1.0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]
