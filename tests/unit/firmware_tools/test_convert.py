"""End-to-end conversion with real TensorFlow, LiteRT and TFLite Micro.

Models are trained for a few steps inside the tests; TensorFlow is imported once per module
and every conversion is shared through module-scoped fixtures to keep this file ~20 s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from firmware_tools.cli import app
from firmware_tools.convert import (
    ConversionResult,
    EvalSet,
    MetricGateError,
    _import_tf,
    convert_model,
    run_litert,
)
from firmware_tools.tflm_check import UnsupportedOpError, check_tflm


@dataclass(frozen=True)
class Trained:
    path: Path
    model: Any
    x_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray


@pytest.fixture(scope="module")
def keras() -> Any:
    _import_tf()  # hushes TensorFlow's start-up logs
    import keras

    keras.utils.set_random_seed(7)
    return keras


@pytest.fixture(scope="module")
def classifier(keras: Any, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A tiny 3-class classifier of 8 features, trained for a few steps."""
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (600, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.3).astype(np.int64)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="tiny_classifier",
    )
    model.compile(keras.optimizers.Adam(0.03), "sparse_categorical_crossentropy")
    model.fit(x[:400], y[:400], epochs=8, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return Trained(path, model, x[:400], x[400:], y[400:])


@pytest.fixture(scope="module")
def converted(classifier: Trained, tmp_path_factory: pytest.TempPathFactory) -> ConversionResult:
    rep = tmp_path_factory.mktemp("data") / "rep.npy"
    np.save(rep, classifier.x_train[:200])
    eval_set = EvalSet("holdout", classifier.x_eval, classifier.y_eval)
    return convert_model(classifier.path, rep, eval_set=eval_set)


def test_keras_file_becomes_a_full_int8_model_for_tflm(converted: ConversionResult) -> None:
    analysis = converted.report.analysis
    assert [t.dtype for t in analysis.inputs + analysis.outputs] == ["int8", "int8"]
    assert analysis.inputs[0].shape == (1, 8)
    assert {op.name for op in analysis.ops} == {"FULLY_CONNECTED", "SOFTMAX"}
    assert converted.tflite[4:8] == b"TFL3"
    assert converted.report.tflm is not None
    assert converted.report.tflm.arena_bytes >= 1024


def test_int8_outputs_of_litert_and_tflm_agree_within_one_lsb(
    converted: ConversionResult, classifier: Trained
) -> None:
    samples = classifier.x_eval[:48]
    litert = run_litert(converted.tflite, samples).astype(np.int32)
    tflm = check_tflm(converted.tflite, list(samples), bisect=False)
    micro = np.stack([o[0].reshape(-1) for o in tflm.outputs]).astype(np.int32)
    assert litert.shape == micro.shape == (48, 3)
    assert np.max(np.abs(litert - micro)) <= 1
    assert converted.report.tflm is not None
    assert converted.report.tflm.max_lsb_vs_litert is not None
    assert converted.report.tflm.max_lsb_vs_litert <= 1


def test_int8_keeps_the_float_accuracy_on_the_named_eval_set(converted: ConversionResult) -> None:
    metric = converted.report.metric
    assert metric is not None
    assert (metric.metric, metric.eval_set, metric.samples) == ("accuracy", "holdout", 200)
    assert metric.float_value > 0.7  # it did learn something
    assert metric.passed
    assert abs(metric.float_value - metric.int8_value) <= 0.02


def test_report_json_has_the_documented_fields(converted: ConversionResult) -> None:
    doc = json.loads(converted.report.to_json())
    assert doc["size_bytes"] == len(converted.tflite)
    assert {
        "name": "SOFTMAX",
        "version": doc["ops"][1]["version"],
        "count": 1,
        "custom": False,
    } in (doc["ops"])
    assert doc["latency"]["class"] == "<1 ms on Cortex-M4 @ 64 MHz"
    assert doc["latency"]["macs"] == 8 * 16 + 16 * 3
    assert doc["metric"]["passed"] is True


def test_a_representative_set_of_the_wrong_range_fails_the_accuracy_gate(
    classifier: Trained,
) -> None:
    # Calibrating on inputs 1000x too large gives an input scale that maps every real input
    # to (almost) the same int8 value: the model still converts, but it is useless.
    with pytest.raises(MetricGateError, match="representative dataset") as info:
        convert_model(
            classifier.model,
            classifier.x_train[:200] * 1000.0,
            eval_set=EvalSet("holdout", classifier.x_eval, classifier.y_eval),
            max_metric_drop=0.05,
        )
    assert info.value.result.metric == "accuracy"
    assert info.value.result.drop > 0.2


def test_a_model_with_an_op_tflm_lacks_is_rejected_naming_the_op(
    keras: Any, classifier: Trained
) -> None:
    # GELU is a TFLite builtin with int8 kernels, but TFLite Micro has no GELU kernel.
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8, activation="gelu"), keras.layers.Dense(2)]
    )
    with pytest.raises(UnsupportedOpError, match="GELU") as info:
        convert_model(model, classifier.x_train[:50])
    assert info.value.ops == ("GELU",)


def test_savedmodel_autoencoder_with_callable_representative_is_gated_on_reconstruction(
    keras: Any, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    basis = rng.normal(size=(3, 12)).astype(np.float32)
    x = (rng.normal(size=(300, 3)).astype(np.float32) @ basis) / 3.0
    model = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(3), keras.layers.Dense(12)], name="ae"
    )
    model.compile(keras.optimizers.Adam(0.02), "mse")
    model.fit(x, x, epochs=10, batch_size=32, verbose=0)
    saved = tmp_path / "ae_savedmodel"
    _export_quietly(model, saved)

    def representative() -> Iterator[list[np.ndarray]]:  # TensorFlow's own callable form
        for i in range(200):
            yield [x[i : i + 1]]

    result = convert_model(saved, representative, eval_set=EvalSet("ae-holdout", x[200:]))
    metric = result.report.metric
    assert metric is not None
    assert metric.metric == "reconstruction"
    assert 0.0 < metric.float_value < float(np.mean(x[200:] ** 2))  # better than all-zeros
    assert metric.passed
    assert result.report.analysis.inputs[0].shape == (1, 12)


def _export_quietly(model: Any, path: Path) -> None:
    from contextlib import redirect_stdout
    from io import StringIO

    with redirect_stdout(StringIO()):  # Keras prints the exported signature
        model.export(str(path), format="tf_saved_model")


@pytest.fixture
def cli_inputs(classifier: Trained, tmp_path: Path) -> dict[str, Path]:
    paths = {"rep": tmp_path / "rep.npy", "x": tmp_path / "x.npy", "y": tmp_path / "y.npy"}
    np.save(paths["rep"], classifier.x_train[:100])
    np.save(paths["x"], classifier.x_eval)
    np.save(paths["y"], classifier.y_eval)
    return paths


def test_cli_convert_writes_model_report_and_c_export(
    classifier: Trained, cli_inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "build"
    args = ["convert", str(classifier.path), "-r", str(cli_inputs["rep"]), "--out", str(out)]
    args += ["--eval-inputs", str(cli_inputs["x"]), "--eval-labels", str(cli_inputs["y"])]
    result = CliRunner().invoke(app, [*args, "--name", "pump"])
    assert result.exit_code == 0, result.output
    assert "FULLY_CONNECTED" in result.output
    assert "accuracy on 'x'" in result.output
    names = {p.name for p in out.iterdir()}
    assert names == {
        "pump.tflite",
        "pump.report.json",
        "pump_model_data.h",
        "pump_model_data.cc",
        "pump_op_resolver.h",
    }
    resolver = (out / "pump_op_resolver.h").read_text()
    assert "MicroMutableOpResolver<2>" in resolver
    assert "AddFullyConnected" in resolver
    assert "AddSoftmax" in resolver


def test_cli_convert_fails_with_a_clear_message_when_the_gate_fails(
    classifier: Trained, cli_inputs: dict[str, Path], tmp_path: Path
) -> None:
    np.save(cli_inputs["rep"], classifier.x_train[:100] * 1000.0)
    args = ["convert", str(classifier.path), "-r", str(cli_inputs["rep"]), "--out", str(tmp_path)]
    args += ["--eval-inputs", str(cli_inputs["x"]), "--eval-labels", str(cli_inputs["y"])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "fails the accuracy gate" in result.output
    assert not (tmp_path / "tiny.tflite").exists()


def test_every_command_explains_itself() -> None:
    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for command in ("convert", "keygen", "sign", "verify", "info-model"):
        assert command in top.output
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0, sub.output
        assert len(sub.output) > 200
