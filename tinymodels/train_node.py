"""Train the node's int8 autoencoder on synthetic pump frames and export it for TFLite Micro.

    python -m tinymodels.train_node --out tinymodels/artifacts/

The model reconstructs the :mod:`tinymodels.node_features` vector of a frame; the node's
anomaly score is the mean squared reconstruction error. Training uses normal frames only;
faulty frames are used afterwards to report detection rates at the shipped threshold.
The arena and flash size are measured with the real TFLM interpreter and checked against
the node budget (32 KB flash, 16 KB arena).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tinymodels.node_features import (
    FEATURE_NAMES,
    N_FEATURES,
    VIB_RATE_HZ,
    VIB_SAMPLES,
    extract_features,
    normalise,
    reconstruction_score,
)
from tinymodels.pump_signals import FAULTS, pump_frame
from tinymodels.quantize import to_tflite_int8
from tinymodels.runtime import GatewayModel
from tinymodels.tflm import measure_arena

_LOGGER = logging.getLogger(__name__)

MODEL_NAME = "node_model"
MODEL_VERSION = "1.0.0"
SEED = 7
FLASH_BUDGET_BYTES = 32 * 1024
ARENA_BUDGET_BYTES = 16 * 1024
# Arena the node firmware reserves: the measured need plus headroom for TFLM version drift.
ARENA_HEADROOM_BYTES = 1024


def features_for(
    rng: np.random.Generator, n: int, fault: str | None = None
) -> npt.NDArray[np.float32]:
    rows = []
    for _ in range(n):
        f = pump_frame(rng, fault, severity=float(rng.uniform(0.5, 1.0)) if fault else 1.0)
        rows.append(extract_features(f.vibration, f.current, f.pressure, f.temperature))
    return np.stack(rows)


def build_model() -> Any:
    import keras

    return keras.Sequential(
        [
            keras.Input((N_FEATURES,)),
            keras.layers.Dense(12, activation="relu"),
            keras.layers.Dense(4, activation="relu"),
            keras.layers.Dense(12, activation="relu"),
            keras.layers.Dense(N_FEATURES),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("artifacts"))
    ap.add_argument("--frames", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=60)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(SEED)
    t0 = time.monotonic()
    rng = np.random.default_rng(SEED)
    train = features_for(rng, args.frames)
    valid = features_for(rng, 1000)
    centre = np.median(train, axis=0)
    scale = np.maximum(train.std(axis=0), 1e-3)
    x = normalise(train, centre, scale)

    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    model.fit(x, x, epochs=args.epochs, batch_size=64, shuffle=True, verbose=0)
    tflite = to_tflite_int8(model, x[:1000])

    # Threshold and detection rates from the int8 model itself, as the node runs it.
    lite = GatewayModel(tflite, {"name": MODEL_NAME})
    xv = normalise(valid, centre, scale)
    normal_scores = reconstruction_score(xv, lite.predict(xv))
    threshold = float(np.quantile(normal_scores, 0.995))
    detection = {}
    for fault in FAULTS:
        xf = normalise(features_for(rng, 300, fault), centre, scale)
        detection[fault] = round(
            float(np.mean(reconstruction_score(xf, lite.predict(xf)) > threshold)), 3
        )
    false_alarm = round(float(np.mean(normal_scores > threshold)), 4)

    arena = measure_arena(tflite)
    if len(tflite) > FLASH_BUDGET_BYTES or arena.total_bytes > ARENA_BUDGET_BYTES:
        raise SystemExit(f"over budget: {len(tflite)} B flash, {arena.total_bytes} B arena")

    interp_in, interp_out = lite.tensor_details()
    manifest = {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "sha256": hashlib.sha256(tflite).hexdigest(),
        "size_bytes": len(tflite),
        "kind": "autoencoder",
        "target": "node",
        "runtime": "tflite-micro",
        "quantization": "int8",
        "arena_bytes_measured": arena.total_bytes,
        "arena_bytes": arena.total_bytes + ARENA_HEADROOM_BYTES,
        "ops": ["FULLY_CONNECTED"],
        "input": {
            "shape": [1, N_FEATURES],
            "dtype": "int8",
            "scale": float(interp_in["quantization"][0]),
            "zero_point": int(interp_in["quantization"][1]),
        },
        "output": {
            "shape": [1, N_FEATURES],
            "dtype": "int8",
            "scale": float(interp_out["quantization"][0]),
            "zero_point": int(interp_out["quantization"][1]),
            "meaning": "reconstruction of the normalised features",
        },
        "features": {
            "module": "tinymodels.node_features",
            "names": list(FEATURE_NAMES),
            "vib_rate_hz": VIB_RATE_HZ,
            "vib_samples": VIB_SAMPLES,
            "centre": [round(float(v), 6) for v in centre],
            "scale": [round(float(v), 6) for v in scale],
        },
        "score": "mean squared error between normalised features and dequantised output",
        "threshold": round(threshold, 6),
        "evaluation": {
            "data": f"synthetic pump frames (tinymodels.pump_signals), seed {SEED}",
            "false_alarm_rate": false_alarm,
            "detection_rate": detection,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{MODEL_NAME}.tflite").write_bytes(tflite)
    (args.out / f"{MODEL_NAME}.json").write_text(json.dumps(manifest, indent=1) + "\n")
    _LOGGER.info(
        "wrote %s: %d B flash, %d B arena, detection %s, false alarms %.3f (%.1f s)",
        MODEL_NAME,
        len(tflite),
        arena.total_bytes,
        detection,
        false_alarm,
        time.monotonic() - t0,
    )


if __name__ == "__main__":
    main()
