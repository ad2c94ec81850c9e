"""On-device inference for simulated nodes with the real TFLite Micro interpreter.

A node runs an int8 ``.tflite`` over a window of its own readings, as firmware
would: standardise each channel (calibrated on the first ``fit_rows`` samples
the node sees after boot, or with fixed statistics from the manifest), flatten
the window, quantise, invoke, dequantise. The score follows the model's shape:

- output as large as the input: an autoencoder; score = mean squared error;
- one output: the score itself;
- several outputs: class scores; label = argmax, score = 1 - p(class 0).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from firmware_tools.sim.node import InferenceResult

_LOGGER = logging.getLogger(__name__)

# The shipped node model over windows of vib_rms, current, pressure and flow (issue 16); the
# simulator runs it unless told otherwise. Only its path: the simulator imports no tinymodels.
DEFAULT_NODE_MODEL = (
    Path(__file__).resolve().parents[2] / "tinymodels" / "artifacts" / "node_window_model.tflite"
)


@dataclass(frozen=True, slots=True)
class NodeFeatures:
    """How readings become the model's input.

    ``mean``/``std`` fix the standardisation; without them the node calibrates
    on its first ``fit_rows`` samples. ``channels`` picks input channels by index
    (default: all, in order).
    """

    window: int
    fit_rows: int = 60
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    std_floor: float | tuple[float, ...] = 1e-3  # one for all channels, or one per channel
    clip: float = 8.0
    channels: tuple[int, ...] | None = None


class TflmModel:
    """An int8 model in a TFLM interpreter, plus the identity a node reports for it."""

    def __init__(
        self,
        model_bytes: bytes,
        *,
        model_id: str,
        model_version: str,
        n_channels: int,
        sequence: int = 1,
        features: NodeFeatures | None = None,
        arena_bytes: int | None = None,
    ) -> None:
        from tflite_micro.python.tflite_micro import runtime

        self.model_id = model_id
        self.model_version = model_version
        self.sequence = sequence
        self.model_hash = hashlib.sha256(model_bytes).digest()[:8]
        self._interp = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=arena_bytes)
        inp = self._interp.get_input_details(0)
        out = self._interp.get_output_details(0)
        self._in_shape = tuple(int(d) for d in inp["shape"])
        self._in_dtype = np.dtype(inp["dtype"])
        self._in_quant = _quant(inp)
        self._out_quant = _quant(out)
        self._in_size = int(np.prod(self._in_shape))
        self._out_size = int(np.prod(out["shape"]))

        picked = features.channels if features and features.channels else None
        self._picked = picked or tuple(range(n_channels))
        width = len(self._picked)
        if self._in_size % width:
            msg = (
                f"{model_id}: model input of {self._in_size} values is not a whole number "
                f"of windows over {width} channels; pick channels in the manifest's features"
            )
            raise ValueError(msg)
        self.features = features or NodeFeatures(window=self._in_size // width)
        if self.features.window * width != self._in_size:
            msg = f"{model_id}: window {self.features.window} x {width} channels != input size"
            raise ValueError(msg)
        # Welford accumulators for self-calibration.
        self._n = 0
        self._mean = np.zeros(width)
        self._m2 = np.zeros(width)
        self._fixed = features is not None and features.mean is not None

    @classmethod
    def from_file(
        cls, path: Path, *, n_channels: int, channel_names: tuple[str, ...] | None = None
    ) -> TflmModel:
        """Load ``model.tflite`` and, if present, its manifest ``model.json`` beside it.

        Manifest keys used: ``name``/``model_id``, ``version``, ``sequence``,
        ``arena_bytes`` and ``features`` (``window``, ``fit_rows``, ``mean``,
        ``std``, ``std_floor``, ``clip``, ``channel_indices``, or ``node_channels``: per input
        channel the node channel names that may feed it, resolved against ``channel_names``).
        """
        data = Path(path).read_bytes()
        manifest: dict[str, Any] = {}
        manifest_path = Path(path).with_suffix(".json")
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
        feats = manifest.get("features")
        features = None
        if isinstance(feats, dict) and "window" not in feats and "module" in feats:
            msg = (
                f"{path}: the model wants features from {feats['module']} (e.g. raw vibration "
                "frames), which the simulator does not compute; use a model over windows of "
                "readings (manifest features.window)"
            )
            raise ValueError(msg)
        if isinstance(feats, dict) and "window" in feats:
            floor = feats.get("std_floor", 1e-3)
            picked = _by_name(path, feats, channel_names)
            if picked is None and "channel_indices" in feats:
                picked = tuple(feats["channel_indices"])
            features = NodeFeatures(
                window=int(feats["window"]),
                fit_rows=int(feats.get("fit_rows", 60)),
                mean=tuple(feats["mean"]) if "mean" in feats else None,
                std=tuple(feats["std"]) if "std" in feats else None,
                std_floor=tuple(floor) if isinstance(floor, list) else float(floor),
                clip=float(feats.get("clip", 8.0)),
                channels=picked,
            )
        return cls(
            data,
            model_id=str(manifest.get("model_id", manifest.get("name", Path(path).stem))),
            model_version=str(manifest.get("version", "0.0.0")),
            n_channels=n_channels,
            sequence=int(manifest.get("sequence", 1)),
            features=features,
            arena_bytes=manifest.get("arena_bytes"),
        )

    @property
    def window(self) -> int:
        return self.features.window

    @property
    def calibrated(self) -> bool:
        return self._fixed or self._n >= self.features.fit_rows

    def observe(self, values: tuple[float, ...]) -> None:
        """Feed one raw sample to the calibration (a no-op once calibrated)."""
        if self.calibrated:
            return
        x = np.asarray([values[i] for i in self._picked], dtype=np.float64)
        self._n += 1
        delta = x - self._mean
        self._mean += delta / self._n
        self._m2 += delta * (x - self._mean)

    def infer(self, window: np.ndarray) -> InferenceResult | None:
        """Score a ``(window, channels)`` array of raw readings; None until calibrated."""
        if not self.calibrated:
            return None
        feats = self.features
        x = np.asarray(window, dtype=np.float64)[-feats.window :, list(self._picked)]
        if feats.mean is not None and feats.std is not None:
            mean, std = np.asarray(feats.mean), np.asarray(feats.std)
        else:
            mean, std = self._mean, np.sqrt(self._m2 / max(1, self._n - 1))
        floor = np.asarray(feats.std_floor, dtype=np.float64)
        z = np.clip((x - mean) / np.maximum(std, floor), -feats.clip, feats.clip)
        flat = z.astype(np.float32).reshape(self._in_shape)
        self._interp.set_input(_quantise(flat, self._in_dtype, self._in_quant), 0)
        started = time.perf_counter_ns()
        self._interp.invoke()
        latency_us = max(1, (time.perf_counter_ns() - started) // 1000)
        y = _dequantise(np.asarray(self._interp.get_output(0)), self._out_quant).reshape(-1)
        if self._out_size == self._in_size:
            return InferenceResult(float(np.mean((y - flat.reshape(-1)) ** 2)), None, latency_us)
        if self._out_size == 1:
            return InferenceResult(float(y[0]), None, latency_us)
        return InferenceResult(float(1.0 - y[0]), int(np.argmax(y)), latency_us)


def _by_name(
    path: Path, feats: dict[str, Any], names: tuple[str, ...] | None
) -> tuple[int, ...] | None:
    """Input channel -> index of the node channel that feeds it (manifest ``node_channels``)."""
    wanted = feats.get("node_channels")
    if not isinstance(wanted, dict) or names is None:
        return None
    picked = []
    for model_channel, aliases in wanted.items():
        found = next((names.index(a) for a in aliases if a in names), None)
        if found is None:
            msg = (
                f"{path}: the model needs {model_channel} (one of {', '.join(aliases)}); "
                f"this node has {', '.join(names)}"
            )
            raise ValueError(msg)
        picked.append(found)
    return tuple(picked)


def _quant(detail: dict[str, Any]) -> tuple[float, int] | None:
    params = detail.get("quantization_parameters") or {}
    scales = params.get("scales")
    if scales is None or len(scales) == 0:
        return None
    return float(scales[0]), int(params["zero_points"][0])


def _quantise(x: np.ndarray, dtype: np.dtype[Any], quant: tuple[float, int] | None) -> np.ndarray:
    if quant is None:
        return x.astype(dtype)
    scale, zero = quant
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _dequantise(y: np.ndarray, quant: tuple[float, int] | None) -> np.ndarray:
    if quant is None:
        return y.astype(np.float32)
    scale, zero = quant
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
