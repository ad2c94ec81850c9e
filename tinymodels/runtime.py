"""Load a shipped model artifact and run it with LiteRT (no TensorFlow).

This is the only module the gateway imports from ``tinymodels``. An artifact is a
``.tflite`` file with a JSON manifest next to it (``<stem>.json``) that names its version,
sha256, tensor shapes and the feature/threshold settings needed to score readings.

Int8 models are quantised and dequantised here, so callers always pass and receive float32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt

from tinymodels.gateway_features import (
    FeatureConfig,
    causal_windows,
    combine,
    debounce,
    select_model_channels,
    standardise,
    statistic_scores,
    window_errors,
)

_LOGGER = logging.getLogger(__name__)

ARTIFACTS_DIR = Path(__file__).with_name("artifacts")
DEFAULT_GATEWAY_MODEL = ARTIFACTS_DIR / "gateway_model.tflite"


class ModelLoadError(Exception):
    """The artifact or its manifest is missing, corrupt, or does not match."""


class _Interpreter(Protocol):
    def allocate_tensors(self) -> None: ...
    def get_input_details(self) -> list[dict[str, Any]]: ...
    def get_output_details(self) -> list[dict[str, Any]]: ...
    def resize_tensor_input(self, index: int, shape: list[int]) -> None: ...
    def set_tensor(self, index: int, value: Any) -> None: ...
    def invoke(self) -> None: ...
    def get_tensor(self, index: int) -> Any: ...


def _make_interpreter(model_content: bytes, *, delegates: bool = True) -> _Interpreter:
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:  # LiteRT missing: the old tflite-runtime wheel has the same API
        from tflite_runtime.interpreter import Interpreter, OpResolverType
    # Without the default XNNPACK delegate LiteRT's int8 kernels round like TFLM's (within
    # 1 LSB); XNNPACK is faster but can differ by 2 LSB after a few layers.
    resolver = (
        OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    return cast(
        _Interpreter,
        Interpreter(
            model_content=model_content, num_threads=1, experimental_op_resolver_type=resolver
        ),
    )


def manifest_path_for(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


@dataclass(frozen=True, slots=True)
class FrameScores:
    """Per-row anomaly scores for one frame and the binary predictions at ``threshold``.

    ``scores`` are in fit-part units (1.0 = the fit part's ``threshold_quantile``);
    ``predictions`` are ``scores > threshold`` after the manifest's hold (debounce), so a
    prediction can lag or outlast a single-row crossing. ``components`` holds each
    statistic (smoothed, in the same units) for diagnostics.
    """

    scores: npt.NDArray[np.float32]
    threshold: float
    predictions: npt.NDArray[np.bool_]
    components: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)


class GatewayModel:
    """A LiteRT interpreter plus its manifest. Thread-safe: calls are serialised."""

    def __init__(
        self, model_content: bytes, manifest: dict[str, Any], *, delegates: bool = True
    ) -> None:
        self.manifest = manifest
        self._interp = _make_interpreter(model_content, delegates=delegates)
        self._lock = threading.Lock()
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        self._in_index = int(inp["index"])
        self._out_index = int(out["index"])
        self._in_dtype = np.dtype(inp["dtype"])
        self._out_dtype = np.dtype(out["dtype"])
        self._in_quant = _quant(inp)
        self._out_quant = _quant(out)
        self._features = int(inp["shape"][-1])
        self._batch = 0
        # Only gateway manifests carry a window feature config; node manifests describe
        # node_features instead and are scored by the caller.
        feats = manifest.get("features")
        self.feature_config = (
            FeatureConfig.from_json(feats)
            if isinstance(feats, dict) and "window" in feats
            else None
        )
        cfg = self.feature_config
        if cfg is not None and "ae" in cfg.components and cfg.model_inputs != self._features:
            raise ModelLoadError(
                f"{manifest.get('name')}: model takes {self._features} inputs but the manifest's "
                f"features give {cfg.model_inputs}"
            )

    def tensor_details(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The interpreter's input and output tensor details (shape, dtype, quantisation)."""
        return self._interp.get_input_details()[0], self._interp.get_output_details()[0]

    @property
    def input_features(self) -> int:
        return self._features

    def predict(self, batch: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Run the model on ``(n, features)`` float input; returns float32 outputs."""
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self._features:
            raise ValueError(f"expected (n, {self._features}) input, got {x.shape}")
        if x.shape[0] == 0:
            return np.zeros((0, self._features), dtype=np.float32)
        return _dequantise(
            self.invoke_raw(_quantise(x, self._in_dtype, self._in_quant)), self._out_quant
        )

    def invoke_raw(self, batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Run on input already in the model's tensor type (int8 for int8 models), no scaling."""
        x = np.asarray(batch, dtype=self._in_dtype)
        with self._lock:
            if x.shape[0] != self._batch:
                self._interp.resize_tensor_input(self._in_index, [x.shape[0], self._features])
                self._interp.allocate_tensors()
                self._batch = x.shape[0]
            self._interp.set_tensor(self._in_index, x)
            self._interp.invoke()
            return np.array(self._interp.get_tensor(self._out_index))

    def predict_batched(
        self, x: npt.NDArray[np.float32], batch_size: int = 512
    ) -> npt.NDArray[np.float32]:
        parts = [self.predict(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self._features), np.float32)

    def component_scores(
        self, frame: npt.ArrayLike, fit_rows: int | None = None
    ) -> dict[str, npt.NDArray[np.float32]]:
        """Each raw (unsmoothed) per-row statistic the manifest asks for, keyed by name."""
        cfg = self._require_features()
        n_fit = fit_rows if fit_rows is not None else cfg.fit_rows
        z = select_model_channels(standardise(frame, cfg, n_fit), cfg)
        n_fit = min(n_fit, z.shape[0])
        raw = statistic_scores(z, cfg, n_fit)
        if "ae" in cfg.components:
            windows = causal_windows(z, cfg.window)
            raw["ae"] = window_errors(windows, self.predict_batched(windows))
        return raw

    def row_scores(
        self, frame: npt.ArrayLike, fit_rows: int | None = None
    ) -> npt.NDArray[np.float32]:
        """Anomaly score per row of a raw ``(n, channels)`` frame, in fit-part units."""
        return self.score_frame(frame, fit_rows).scores

    def score_frame(self, frame: npt.ArrayLike, fit_rows: int | None = None) -> FrameScores:
        """Scores and predictions for a frame whose first ``fit_rows`` rows are normal.

        Every statistic is fitted on, and scaled by, the frame's own fit part, so each
        machine is judged against its own normal behaviour. The threshold is the manifest's
        ``threshold_factor`` in those units.
        """
        cfg = self._require_features()
        n_fit = fit_rows if fit_rows is not None else cfg.fit_rows
        raw = self.component_scores(frame, n_fit)
        n_fit = min(n_fit, next(iter(raw.values())).size)
        parts = {k: combine({k: v}, _single(cfg, k), n_fit) for k, v in raw.items()}
        scores = np.mean([parts[k] for k in cfg.components], axis=0).astype(np.float32)
        threshold = cfg.threshold_factor
        predictions = debounce(scores > threshold, cfg.hold_on, cfg.hold_off)
        return FrameScores(
            scores=scores, threshold=threshold, predictions=predictions, components=parts
        )

    def _require_features(self) -> FeatureConfig:
        if self.feature_config is None:
            raise ModelLoadError(f"{self.manifest.get('name')}: manifest has no feature config")
        return self.feature_config


def _single(cfg: FeatureConfig, name: str) -> FeatureConfig:
    """``cfg`` restricted to one component (to scale each statistic on its own)."""
    return replace(cfg, components=(name,))


def _quant(detail: dict[str, Any]) -> tuple[float, int] | None:
    scale, zero = detail.get("quantization", (0.0, 0))
    return (float(scale), int(zero)) if scale else None


def _quantise(
    x: npt.NDArray[np.float32], dtype: np.dtype[Any], quant: tuple[float, int] | None
) -> npt.NDArray[Any]:
    if quant is None:
        return x.astype(dtype)
    scale, zero = quant
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _dequantise(y: npt.NDArray[Any], quant: tuple[float, int] | None) -> npt.NDArray[np.float32]:
    if quant is None:
        return y.astype(np.float32)
    scale, zero = quant
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def load_manifest(model_path: Path) -> dict[str, Any]:
    path = manifest_path_for(model_path)
    try:
        return cast(dict[str, Any], json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{path}: cannot read the model manifest ({exc}); it must sit next to the .tflite"
        ) from exc


def load_model(
    path: str | Path = DEFAULT_GATEWAY_MODEL, *, verify: bool = True, delegates: bool = True
) -> GatewayModel:
    """Load ``path`` (a .tflite) and its manifest; checks the manifest's sha256 when ``verify``.

    ``delegates=False`` skips LiteRT's default XNNPACK delegate (bit-closer to TFLM).
    """
    model_path = Path(path)
    try:
        content = model_path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{model_path}: cannot read model ({exc})") from exc
    manifest = load_manifest(model_path)
    if verify:
        digest = hashlib.sha256(content).hexdigest()
        if manifest.get("sha256") != digest:
            raise ModelLoadError(
                f"{model_path}: sha256 {digest} does not match manifest "
                f"{manifest.get('sha256')}; rebuild the artifact or fix the manifest"
            )
    _LOGGER.debug("loaded %s %s", manifest.get("name"), manifest.get("version"))
    return GatewayModel(content, manifest, delegates=delegates)
