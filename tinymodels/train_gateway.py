"""Train the gateway anomaly model on SKAB and export it as an int8 TFLite artifact.

    python -m tinymodels.train_gateway --data ../shared/data/skab --out tinymodels/artifacts/

Training data (labels never read): ``anomaly-free.csv`` cut into experiment-sized chunks,
each standardised by its own first 400 rows, plus the first 400 rows (the fit part SKAB
allows) of every labelled file. The test parts (rows 400+) of the labelled files are never
seen in training. Every input file is pinned by sha256 in ``tinymodels/gateway_data.json``.

Needs the ``train`` extra (TensorFlow); the gateway itself only uses :mod:`tinymodels.runtime`.
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

from tinymodels.gateway_features import (
    FeatureConfig,
    causal_windows,
    select_model_channels,
    standardise,
)
from tinymodels.quantize import to_tflite_int8
from tinymodels.skab_data import CHANNELS, SkabFile, load_skab_csv

_LOGGER = logging.getLogger(__name__)

PINS_PATH = Path(__file__).with_name("gateway_data.json")
MODEL_NAME = "gateway_model"
MODEL_VERSION = "2.0.0"
SEED = 20240811
FREE_CHUNK_ROWS = 1150  # about one SKAB experiment
FREE_CHUNK_STEP = 250
# Detector settings: what tinymodels.tune_gateway's rule picks on all 25 development files; its
# leave-one-group-out CV only checks that choice (see docs/models.md, "chosen on which files").
DEFAULTS: dict[str, Any] = {
    "smooth_rows": 5,
    "threshold_quantile": 0.99,
    "threshold_factor": 1.0,
    "drop_channels": ("Temperature", "Thermocouple"),
    "components": ("ae", "t2", "mset"),
    "pca_variance": 0.9,
    "mset_memory": 80,
    "hold_on": 10,
    "hold_off": 30,
}


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_pins(data_dir: Path) -> None:
    files = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*.csv"))
    pins = {"dataset": "SKAB v0.9 (waico/SKAB b2c0d46)", "files": {}}
    for rel in files:
        pins["files"][rel] = sha256_file(data_dir / rel)  # type: ignore[index]
    PINS_PATH.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")


def load_pinned(data_dir: Path) -> tuple[SkabFile, list[SkabFile]]:
    """The anomaly-free file and the labelled files, after checking every sha256 pin."""
    pins: dict[str, str] = json.loads(PINS_PATH.read_text())["files"]
    free: SkabFile | None = None
    labelled: list[SkabFile] = []
    for rel, digest in sorted(pins.items()):
        path = data_dir / rel
        if not path.exists():
            raise SystemExit(f"{path}: pinned data file missing; is --data the SKAB folder?")
        if sha256_file(path) != digest:
            raise SystemExit(f"{path}: sha256 differs from {PINS_PATH.name}; data changed")
        f = load_skab_csv(path, rel)
        if f.anomaly is None:
            free = f
        else:
            labelled.append(f)
    if free is None:
        raise SystemExit("no anomaly-free file among the pinned data")
    return free, labelled


def load_unpinned(data_dir: Path) -> tuple[SkabFile, list[SkabFile]]:
    """Like :func:`load_pinned` for a SKAB-layout folder that is not pinned (tests, new data)."""
    free: SkabFile | None = None
    labelled: list[SkabFile] = []
    for path in sorted(data_dir.rglob("*.csv")):
        f = load_skab_csv(path, path.relative_to(data_dir).as_posix())
        if f.anomaly is None:
            free = f
        else:
            labelled.append(f)
    if free is None:
        raise SystemExit(f"{data_dir}: no anomaly-free file (a CSV without labels)")
    return free, labelled


def training_windows(
    free: SkabFile, labelled: list[SkabFile], cfg: FeatureConfig
) -> npt.NDArray[np.float32]:
    parts = []
    for start in range(0, free.values.shape[0] - FREE_CHUNK_ROWS + 1, FREE_CHUNK_STEP):
        z = select_model_channels(
            standardise(free.values[start : start + FREE_CHUNK_ROWS], cfg), cfg
        )
        parts.append(causal_windows(z, cfg.window)[cfg.window :])
    for f in labelled:
        z = select_model_channels(standardise(f.values[: cfg.fit_rows], cfg), cfg)
        parts.append(causal_windows(z, cfg.window)[cfg.window :])
    return np.concatenate(parts).astype(np.float32)


def build_model(features: int, hidden: int, latent: int) -> Any:
    import keras

    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(latent, activation="relu"),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(features),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/skab"))
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("artifacts"))
    ap.add_argument("--write-pins", action="store_true", help="re-pin the data files and stop")
    ap.add_argument(
        "--no-pins", action="store_true", help="skip the sha256 pin check (tests, other data)"
    )
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--latent", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--smooth", type=int, default=DEFAULTS["smooth_rows"])
    ap.add_argument("--quantile", type=float, default=DEFAULTS["threshold_quantile"])
    ap.add_argument("--factor", type=float, default=DEFAULTS["threshold_factor"])
    ap.add_argument(
        "--drop-channels",
        default=",".join(DEFAULTS["drop_channels"]),
        help="comma-separated channels the detector ignores (default: the drifting temperatures)",
    )
    ap.add_argument("--components", default=",".join(DEFAULTS["components"]))
    ap.add_argument("--hold-on", type=int, default=DEFAULTS["hold_on"])
    ap.add_argument("--hold-off", type=int, default=DEFAULTS["hold_off"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.write_pins:
        write_pins(args.data)
        return

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(2)
    except RuntimeError:
        # TensorFlow was already initialised in this process (a test suite); its thread
        # settings cannot change any more and the training does not depend on them.
        _LOGGER.debug("TensorFlow already initialised: keeping its thread settings")

    t0 = time.monotonic()
    free, labelled = load_unpinned(args.data) if args.no_pins else load_pinned(args.data)
    dropped = {c for c in args.drop_channels.split(",") if c}
    if dropped - set(CHANNELS):
        raise SystemExit(f"--drop-channels: unknown {sorted(dropped - set(CHANNELS))}")
    floor = 0.05 * free.values.std(axis=0)  # 5 % of the normal spread: a still channel stays sane
    cfg = FeatureConfig(
        channels=CHANNELS,
        window=args.window,
        fit_rows=400,
        std_floor=tuple(round(float(v), 6) for v in floor),
        clip=10.0,
        smooth_rows=args.smooth,
        threshold_quantile=args.quantile,
        threshold_factor=args.factor,
        model_channels=tuple(c for c in CHANNELS if c not in dropped),
        components=tuple(c for c in args.components.split(",") if c),
        pca_variance=DEFAULTS["pca_variance"],
        mset_memory=DEFAULTS["mset_memory"],
        hold_on=args.hold_on,
        hold_off=args.hold_off,
    )
    x = training_windows(free, labelled, cfg)
    _LOGGER.info("training windows: %s", x.shape)
    model = build_model(x.shape[1], args.hidden, args.latent)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    hist = model.fit(x, x, epochs=args.epochs, batch_size=256, shuffle=True, verbose=0)
    _LOGGER.info("final training mse %.4f", hist.history["loss"][-1])

    rng = np.random.default_rng(SEED)
    rep = x[rng.choice(x.shape[0], size=min(2000, x.shape[0]), replace=False)]
    tflite = to_tflite_int8(model, rep)
    args.out.mkdir(parents=True, exist_ok=True)
    model_path = args.out / f"{MODEL_NAME}.tflite"
    model_path.write_bytes(tflite)
    manifest = {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "sha256": hashlib.sha256(tflite).hexdigest(),
        "size_bytes": len(tflite),
        "kind": "autoencoder",
        "target": "gateway",
        "runtime": "litert",
        "quantization": "int8",
        "input": {"shape": [-1, x.shape[1]], "dtype": "int8", "layout": "window x channel"},
        "output": {"shape": [-1, x.shape[1]], "dtype": "int8", "meaning": "reconstruction"},
        "features": cfg.to_json(),
        "score": (
            "mean over components of (causal moving mean of the statistic) / "
            "quantile(fit-part values, threshold_quantile); ae = per-window mean squared "
            "reconstruction error, t2 = PCA Hotelling T2, q = PCA SPE, mset = kernel-regression "
            "residual, all fitted on the frame's first fit_rows rows of model_channels"
        ),
        "threshold": "score > threshold_factor, debounced: hold_on rows to raise, hold_off to clear",
        "training": {
            "data_pins": PINS_PATH.name,
            "seed": SEED,
            "epochs": args.epochs,
            "hidden": args.hidden,
            "latent": args.latent,
            "rows_used": "anomaly-free.csv (all) + rows 0..399 of each labelled file",
            "windows": int(x.shape[0]),
            "final_mse": round(float(hist.history["loss"][-1]), 5),
        },
    }
    (args.out / f"{MODEL_NAME}.json").write_text(json.dumps(manifest, indent=1) + "\n")
    _LOGGER.info("wrote %s (%d bytes) in %.1f s", model_path, len(tflite), time.monotonic() - t0)


if __name__ == "__main__":
    main()
