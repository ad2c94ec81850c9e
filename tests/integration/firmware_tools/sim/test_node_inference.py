"""On-device inference with the real TFLite Micro interpreter over a tiny int8 model."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from firmware_tools.sim.node import NodeConfig, NodeLogic
from firmware_tools.sim.signals import PUMP_CHANNELS, Fault, FaultKind, PumpSignal
from firmware_tools.sim.tflm import TflmModel
from gateway.protocol.messages import NodeInference, Status

WINDOW = 8
N_CH = len(PUMP_CHANNELS)


@pytest.fixture(scope="module")
def tiny_autoencoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An int8 dense autoencoder over 8 x 5 standardised readings, trained for a moment."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (512, WINDOW * N_CH)).astype(np.float32)
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(WINDOW * N_CH,), batch_size=1),
            tf.keras.layers.Dense(12, activation="relu"),
            tf.keras.layers.Dense(WINDOW * N_CH),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, x, epochs=3, batch_size=64, verbose=0)

    def representative() -> Iterator[list[np.ndarray]]:
        for row in x[:64]:
            yield [row[None, :]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        # The converter warns that it had no input statistics; the representative set
        # provides them for full-integer quantisation, which is what we want.
        warnings.simplefilter("ignore", UserWarning)
        data = converter.convert()

    path = tmp_path_factory.mktemp("model") / "tiny_ae.tflite"
    path.write_bytes(data)
    manifest = {
        "name": "tiny-ae",
        "version": "0.3.1",
        "sequence": 5,
        "features": {"window": WINDOW, "fit_rows": 40},
    }
    path.with_suffix(".json").write_text(json.dumps(manifest))
    return path


def test_node_reports_inference_from_the_tflm_interpreter(tiny_autoencoder: Path) -> None:
    model = TflmModel.from_file(tiny_autoencoder, n_channels=N_CH)
    assert model.window == WINDOW
    node = NodeLogic(
        NodeConfig("pump-07", PUMP_CHANNELS, batch_size=10, threshold=3.0, seed=1), model=model
    )
    signal = PumpSignal(rate_hz=10, seed=1, faults=[Fault(FaultKind.VALVE_CLOSED, 20, 20)])

    results: list[tuple[float, NodeInference]] = []
    for sample in signal.take(400):
        for msg in node.add_sample(round(sample.t_s * 1000), sample.values):
            if isinstance(msg, NodeInference):
                results.append((sample.t_s, msg))

    # Calibration on the first 40 samples, then one inference per batch of 10.
    assert len(results) == (400 - 40) // 10 + 1
    first = results[0][1]
    assert first.model_id == "tiny-ae"
    assert first.model_version == "0.3.1"
    assert first.model_hash == hashlib.sha256(tiny_autoencoder.read_bytes()).digest()[:8]
    assert first.latency_us > 0
    assert first.seq > 1
    normal = [m.score for t, m in results if t < 20]
    faulty = [m.score for t, m in results if 24 <= t < 40]  # after the valve's closing ramp
    assert np.median(faulty) > 5 * np.median(normal)
    assert {m.label for t, m in results if 24 <= t < 40} == {1}  # score above threshold 3.0
    assert node.stats.inferences == len(results)

    status = node.make_status(now_ms=40_000)
    assert isinstance(status, Status)
    (slot,) = status.slots
    assert (slot.model_id, slot.model_version, slot.sequence, slot.active) == (
        "tiny-ae",
        "0.3.1",
        5,
        True,
    )


def test_model_input_that_does_not_fit_the_channels_is_refused(tiny_autoencoder: Path) -> None:
    with pytest.raises(ValueError, match="channels"):
        TflmModel.from_file(tiny_autoencoder, n_channels=3)
