"""Keras / SavedModel -> full-integer int8 TFLite, checked in TFLite Micro and against float.

Steps of :func:`convert_model`:

1. Convert with ``tf.lite.TFLiteConverter`` (``TFLITE_BUILTINS_INT8`` only, int8 inputs and
   outputs), calibrated on a representative dataset; also convert a float reference.
2. Read ops, tensors and a cost estimate from the flatbuffer (:mod:`firmware_tools.report`).
3. Load and invoke the int8 model in the real TFLM interpreter, measure the arena and compare
   its int8 outputs with LiteRT's (:mod:`firmware_tools.tflm_check`).
4. With an evaluation set, compare the task metric of the float reference and the int8 model
   (both run in LiteRT, so the difference is the quantisation alone) and fail when int8 loses
   more than the allowed drop.

TensorFlow is imported only inside this module's functions: the gateway and the other
``flash-model`` commands never pay for it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from firmware_tools.cexport import export_c
from firmware_tools.report import ConversionReport, MetricResult, TflmSummary, analyse_tflite
from firmware_tools.tflm_check import TflmResult, check_tflm
from gateway.errors import ModelError
from gateway.protocol.manifest import DEFAULT_TARGET, TARGET_CLASSES
from tinymodels.tflm import capture_c_stderr

_LOGGER = logging.getLogger(__name__)

RepresentativeData = np.ndarray | str | Path | Callable[[], Iterable[Any]]
METRICS = ("auto", "accuracy", "reconstruction", "mse")
# Default allowed drop per metric when none is given (see MetricResult for the units).
DEFAULT_MAX_DROP = {"accuracy": 0.02, "reconstruction": 0.25, "mse": 0.25}
MAX_REPRESENTATIVE_SAMPLES = 500
_LSB_CHECK_SAMPLES = 16


class MetricGateError(ModelError):
    """The int8 model loses more than the allowed amount of the task metric."""

    def __init__(self, result: MetricResult, report: ConversionReport) -> None:
        self.result = result
        self.report = report
        r = result
        super().__init__(
            f"int8 model fails the {r.metric} gate on eval set {r.eval_set!r}: float "
            f"{r.float_value:.4f} -> int8 {r.int8_value:.4f}, drop {r.drop:.4f} > allowed "
            f"{r.max_drop:g}. Make the representative dataset cover the real input range "
            "(it sets the int8 scales), or raise --max-metric-drop if the loss is acceptable."
        )


@dataclass(frozen=True, slots=True)
class EvalSet:
    """A named evaluation set: inputs and optional labels (class ids or target values)."""

    name: str
    inputs: np.ndarray
    labels: np.ndarray | None = None

    @classmethod
    def from_files(
        cls, inputs: Path, labels: Path | None = None, name: str | None = None
    ) -> EvalSet:
        x = _load_npy(inputs, "evaluation inputs")
        y = _load_npy(labels, "evaluation labels") if labels is not None else None
        if y is not None and len(y) != len(x):
            raise ModelError(f"eval set: {len(x)} inputs but {len(y)} labels; they must match")
        return cls(name=name or inputs.stem, inputs=x, labels=y)


@dataclass(frozen=True, slots=True)
class ConversionResult:
    tflite: bytes
    float_tflite: bytes
    report: ConversionReport
    tflm: TflmResult


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {what} from {path}: {exc}") from exc
    if not isinstance(arr, np.ndarray) or arr.ndim < 1 or len(arr) == 0:
        raise ModelError(f"{what} in {path} must be a non-empty array with samples on axis 0")
    return arr


@contextlib.contextmanager
def _quiet_tensorflow() -> Iterator[io.StringIO]:
    """Keep TF's C++ logs (fd 2) and Keras' export prints (stdout) out of the user's terminal.

    The text is logged at DEBUG and returned for error messages.
    """
    out = io.StringIO()
    with capture_c_stderr() as err, contextlib.redirect_stdout(out), warnings.catch_warnings():
        # The converter warns that int8 inputs carry no statistics: expected, they are set
        # from the representative dataset.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"tensorflow\..*")
        yield out
    _LOGGER.debug("TensorFlow said: %s%s", out.getvalue(), err.text)


def _import_tf() -> Any:
    # Only the converter needs TensorFlow; its start-up chatter is noise for CLI users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _quiet_tensorflow():
        import tensorflow as tf
    tf.get_logger().setLevel(logging.ERROR)
    return tf


def _input_shape(model: Any) -> tuple[int, ...] | None:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return None
    return tuple(int(d) if d is not None else -1 for d in inputs[0].shape[1:])


def _representative(
    data: RepresentativeData, feature_shape: tuple[int, ...] | None
) -> Callable[[], Iterable[Any]]:
    if callable(data):
        return data
    arr = _load_npy(Path(data), "representative data") if isinstance(data, str | Path) else data
    arr = np.asarray(arr, dtype=np.float32)
    if feature_shape is not None and tuple(arr.shape[1:]) != feature_shape:
        raise ModelError(
            f"representative data has samples of shape {tuple(arr.shape[1:])} but the model "
            f"takes {feature_shape}; give an array shaped (N, {', '.join(map(str, feature_shape))})"
        )
    arr = arr[:MAX_REPRESENTATIVE_SAMPLES]

    def gen() -> Iterator[list[np.ndarray]]:
        for i in range(len(arr)):
            yield [arr[i : i + 1]]

    return gen


def _converter(tf: Any, source: Any) -> tuple[Any, tuple[int, ...] | None]:
    """A fresh TFLiteConverter for ``source`` and the model's per-sample input shape."""
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            if not (path / "saved_model.pb").exists():
                raise ModelError(f"{path} is a directory but not a SavedModel (no saved_model.pb)")
            return tf.lite.TFLiteConverter.from_saved_model(str(path)), None
        if not path.exists():
            raise ModelError(f"model file {path} does not exist")
        try:
            model = tf.keras.models.load_model(path, compile=False)
        except (ValueError, OSError, TypeError) as exc:
            raise ModelError(f"cannot load Keras model {path}: {exc}") from exc
    else:
        model = source
    return tf.lite.TFLiteConverter.from_keras_model(model), _input_shape(model)


def _convert(tf: Any, source: Any, representative: RepresentativeData | None) -> bytes:
    converter, feature_shape = _converter(tf, source)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(representative, feature_shape)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with _quiet_tensorflow() as chatter:
        try:
            return bytes(converter.convert())
        except ModelError:
            raise
        except Exception as exc:  # the converter raises ConverterError, ValueError, ...
            kind = "int8" if representative is not None else "float"
            tail = chatter.getvalue().strip()[-500:]
            raise ModelError(
                f"TFLite {kind} conversion failed: {exc}. Models for TFLM must use "
                "TFLite builtin ops only (no SELECT_TF_OPS)." + (f" ({tail})" if tail else "")
            ) from exc


def run_litert(model: bytes, samples: np.ndarray, *, dequantize: bool = False) -> np.ndarray:
    """Run ``model`` in LiteRT on each sample of ``samples`` (axis 0); output 0 per sample.

    Float samples are quantised for an int8 input. Outputs are raw (int8 for an int8 model)
    unless ``dequantize``.
    """
    from ai_edge_litert.interpreter import Interpreter

    with capture_c_stderr():  # LiteRT announces its XNNPACK delegate on stderr
        interp = Interpreter(model_content=model)
        interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    results = []
    for sample in samples:
        x = np.asarray(sample).reshape(inp["shape"])
        if np.issubdtype(inp["dtype"], np.integer) and not np.issubdtype(x.dtype, np.integer):
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / in_scale + in_zero), info.min, info.max)
        interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interp.invoke()
        y = interp.get_tensor(out["index"]).copy()
        if dequantize and out_scale:
            y = (y.astype(np.float32) - out_zero) * out_scale
        results.append(y.reshape(y.shape[1:]) if y.shape[:1] == (1,) else y)
    return np.stack(results)


def _metric_values(metric: str, x: np.ndarray, y: np.ndarray | None, out: np.ndarray) -> float:
    n = len(x)
    if metric == "accuracy":
        assert y is not None
        flat = out.reshape(n, -1)
        pred = (flat[:, 0] > 0.5).astype(np.int64) if flat.shape[1] == 1 else flat.argmax(axis=1)
        return float(np.mean(pred == y.reshape(n).astype(np.int64)))
    target = x if metric == "reconstruction" else y
    assert target is not None
    return float(np.mean((out.reshape(n, -1) - target.reshape(n, -1).astype(np.float32)) ** 2))


def _choose_metric(metric: str, eval_set: EvalSet, out_size: int) -> str:
    if metric not in METRICS:
        raise ModelError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    labels = eval_set.labels
    if metric == "auto":
        if labels is not None:
            metric = "accuracy" if np.issubdtype(labels.dtype, np.integer) else "mse"
        else:
            metric = "reconstruction"
    in_size = int(np.prod(eval_set.inputs.shape[1:]))
    if metric in ("accuracy", "mse") and labels is None:
        raise ModelError(f"metric {metric} needs labels: pass --eval-labels")
    if metric == "reconstruction" and in_size != out_size:
        raise ModelError(
            f"reconstruction error needs output size == input size ({out_size} != {in_size}); "
            "for a classifier pass --eval-labels"
        )
    return metric


def evaluate(
    float_tflite: bytes,
    int8_tflite: bytes,
    eval_set: EvalSet,
    *,
    metric: str = "auto",
    max_drop: float | None = None,
) -> MetricResult:
    """Float vs int8 on the task metric over ``eval_set`` (both models run in LiteRT)."""
    x = np.asarray(eval_set.inputs, dtype=np.float32)
    out_f = run_litert(float_tflite, x, dequantize=True)
    out_q = run_litert(int8_tflite, x, dequantize=True).astype(np.float32)
    kind = _choose_metric(metric, eval_set, int(np.prod(out_f.shape[1:])))
    value_f = _metric_values(kind, x, eval_set.labels, out_f)
    value_q = _metric_values(kind, x, eval_set.labels, out_q)
    # Errors grow relatively; the floor keeps a perfect float model from dividing by zero.
    drop = value_f - value_q if kind == "accuracy" else (value_q - value_f) / max(value_f, 1e-12)
    return MetricResult(
        metric=kind,
        eval_set=eval_set.name,
        samples=len(x),
        float_value=value_f,
        int8_value=value_q,
        drop=drop,
        max_drop=DEFAULT_MAX_DROP[kind] if max_drop is None else max_drop,
    )


def _check_samples(
    representative: RepresentativeData, eval_set: EvalSet | None
) -> np.ndarray | None:
    if eval_set is not None:
        return np.asarray(eval_set.inputs[:_LSB_CHECK_SAMPLES], dtype=np.float32)
    if isinstance(representative, np.ndarray):
        return np.asarray(representative[:_LSB_CHECK_SAMPLES], dtype=np.float32)
    if isinstance(representative, str | Path):
        return _load_npy(Path(representative), "representative data")[:_LSB_CHECK_SAMPLES]
    return None


def convert_model(
    source: str | Path | Any,
    representative: RepresentativeData,
    *,
    eval_set: EvalSet | None = None,
    metric: str = "auto",
    max_metric_drop: float | None = None,
    target: str = DEFAULT_TARGET,
    progress: Callable[[str], None] | None = None,
) -> ConversionResult:
    """Convert a Keras model (file, in-memory) or SavedModel dir to a checked int8 TFLite model.

    ``representative`` is an ``(N, *input_shape)`` float array, a ``.npy`` path, or a callable
    yielding lists of batch-1 input arrays (TensorFlow's ``representative_dataset``).

    Raises :class:`ModelError` when conversion fails,
    :class:`~firmware_tools.tflm_check.UnsupportedOpError` (naming the ops) when TFLM cannot
    run the model, and :class:`MetricGateError` when int8 loses more than ``max_metric_drop``
    (default per metric: :data:`DEFAULT_MAX_DROP`) on ``eval_set``.
    """
    if target not in TARGET_CLASSES:
        raise ModelError(
            f"unknown target class {target!r}; choose one of {', '.join(sorted(TARGET_CLASSES))}"
        )
    step = progress or (lambda _msg: None)
    step("Loading TensorFlow")
    tf = _import_tf()
    step("Converting to int8 TFLite (calibrating on the representative dataset)")
    int8 = _convert(tf, source, representative)
    step("Converting the float reference")
    float_ref = _convert(tf, source, None)
    analysis = analyse_tflite(int8)
    bad_io = [t for t in analysis.inputs + analysis.outputs if t.dtype != "int8"]
    if bad_io:
        raise ModelError(
            "converted model is not int8 end to end: "
            + ", ".join(f"{t.name} is {t.dtype}" for t in bad_io)
        )
    source_name = (
        str(source) if isinstance(source, str | Path) else getattr(source, "name", "model")
    )
    report = ConversionReport(source=source_name, analysis=analysis, target=target)

    step("Loading and invoking in TFLite Micro, measuring the arena")
    samples = _check_samples(representative, eval_set)
    tflm = check_tflm(int8, list(samples) if samples is not None else None)
    max_lsb = None
    if samples is not None:
        litert_out = run_litert(int8, samples).astype(np.int32)
        tflm_out = np.stack([o[0].reshape(litert_out.shape[1:]) for o in tflm.outputs])
        max_lsb = int(np.max(np.abs(litert_out - tflm_out.astype(np.int32))))
        if max_lsb > 1:
            report.notes.append(f"TFLM and LiteRT int8 outputs differ by up to {max_lsb} LSB")
    report.tflm = TflmSummary(
        loaded=True,
        arena_bytes=tflm.arena_bytes,
        arena_recorded_bytes=tflm.arena_recorded_bytes,
        arena_min_bytes=tflm.arena_min_bytes,
        max_lsb_vs_litert=max_lsb,
    )
    if report.fits_target() is False:
        budget = TARGET_CLASSES[target]
        report.notes.append(
            f"exceeds {target} budget ({budget.flash_bytes:,} B model, {budget.ram_bytes:,} B arena)"
        )

    if eval_set is not None:
        step(f"Evaluating float vs int8 on {eval_set.name!r}")
        result = evaluate(float_ref, int8, eval_set, metric=metric, max_drop=max_metric_drop)
        report.metric = result
        if not result.passed:
            raise MetricGateError(result, report)
    return ConversionResult(tflite=int8, float_tflite=float_ref, report=report, tflm=tflm)


def save_conversion(result: ConversionResult, out_dir: Path, name: str) -> dict[str, Path]:
    """Write ``<name>.tflite``, ``<name>.report.json`` and the C export into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "tflite": out_dir / f"{name}.tflite",
        "report": out_dir / f"{name}.report.json",
    }
    paths["tflite"].write_bytes(result.tflite)
    paths["report"].write_text(result.report.to_json(), encoding="utf-8")
    c_files = export_c(
        result.tflite, name, arena_bytes=result.tflm.arena_bytes, analysis=result.report.analysis
    ).write(out_dir)
    for path in c_files:
        paths[path.name] = path
    return paths


def load_representative(path: Path) -> np.ndarray:
    """Read a representative dataset ``.npy`` (samples on axis 0) as float32."""
    return np.asarray(_load_npy(path, "representative data"), dtype=np.float32)


__all__: Sequence[str] = (
    "DEFAULT_MAX_DROP",
    "ConversionResult",
    "EvalSet",
    "MetricGateError",
    "convert_model",
    "evaluate",
    "run_litert",
    "save_conversion",
)
