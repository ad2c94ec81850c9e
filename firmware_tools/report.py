"""What a converted model is: size, ops, tensors, cost estimate, TFLM check and accuracy.

:func:`analyse_tflite` reads the ``.tflite`` flatbuffer with the TFLite schema bindings that
ship with LiteRT (``ai_edge_litert.schema_py_generated``) or, failing that, with tflite-micro;
neither needs TensorFlow. :class:`ConversionReport` gathers the analysis with the TFLM and
accuracy results and renders as a Rich table or as JSON.

Latency estimate
----------------
A rough class, not a benchmark. For int8 kernels with CMSIS-NN on a Cortex-M4 at 64 MHz::

    cycles ≈ 2 × MACs + 4 × elementwise outputs + 1000 × operators

MACs come from the weight shapes of FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D,
TRANSPOSE_CONV and BATCH_MATMUL (the SIMD MAC loop sustains about one MAC per 2 cycles once
loads and requantisation are counted); every other operator costs ~4 cycles per output
element; ~1000 cycles per operator covers kernel dispatch and per-call setup. The result is
placed in a decade class (``<1 ms`` ... ``>1 s``); expect the truth within a factor of ~3.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from rich.console import Console
from rich.table import Table

from gateway.errors import ModelError
from gateway.protocol.manifest import TARGET_CLASSES, TensorSpec

LATENCY_MCU = "Cortex-M4 @ 64 MHz"
LATENCY_CLOCK_HZ = 64_000_000
_CYCLES_PER_MAC = 2.0
_CYCLES_PER_ELEMENT = 4.0
_CYCLES_PER_OP = 1000.0
# Upper bounds in milliseconds of each latency class, in order.
_LATENCY_CLASSES = ((1.0, "<1 ms"), (10.0, "1-10 ms"), (100.0, "10-100 ms"), (1000.0, "0.1-1 s"))

_MAC_OPS = frozenset(
    {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "BATCH_MATMUL"}
)


@cache
def schema() -> Any:
    """The generated TFLite flatbuffer bindings (module), from LiteRT or tflite-micro."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated
    return schema_py_generated


@cache
def _enum_names(enum_cls_name: str) -> dict[int, str]:
    enum_cls = getattr(schema(), enum_cls_name)
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass(frozen=True, slots=True)
class OpUse:
    """One operator code of the model: builtin name (or custom code), version, occurrences."""

    name: str
    version: int
    count: int
    custom: bool = False


@dataclass(frozen=True, slots=True)
class LatencyEstimate:
    macs: int
    elementwise: int
    operators: int
    cycles: int
    ms: float
    latency_class: str  # "<1 ms", "1-10 ms", ...
    mcu: str = LATENCY_MCU


@dataclass(frozen=True, slots=True)
class ModelAnalysis:
    """Static facts read from the flatbuffer."""

    size_bytes: int
    ops: tuple[OpUse, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    latency: LatencyEstimate
    subgraphs: int

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(op.name for op in self.ops)


def estimate_latency(macs: int, elementwise: int, operators: int) -> LatencyEstimate:
    """Place a model in a latency class on the reference MCU (see the module docstring)."""
    cycles = int(
        _CYCLES_PER_MAC * macs + _CYCLES_PER_ELEMENT * elementwise + _CYCLES_PER_OP * operators
    )
    ms = cycles / LATENCY_CLOCK_HZ * 1000.0
    label = ">1 s"
    for bound, name in _LATENCY_CLASSES:
        if ms < bound:
            label = name
            break
    return LatencyEstimate(macs, elementwise, operators, cycles, ms, f"{label} on {LATENCY_MCU}")


def _tensor_spec(tensor: Any) -> TensorSpec:
    quant = tensor.quantization
    scale = 0.0
    zero_point = 0
    if quant is not None and quant.scale is not None and len(quant.scale) > 0:
        scale = float(quant.scale[0])
        zero_point = int(quant.zeroPoint[0]) if quant.zeroPoint is not None else 0
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name or "")
    shape = tuple(int(x) for x in tensor.shape) if tensor.shape is not None else ()
    dtype = _enum_names("TensorType").get(tensor.type, f"type{tensor.type}").lower()
    return TensorSpec(name=name, shape=shape, dtype=dtype, scale=scale, zero_point=zero_point)


def _op_macs(name: str, op: Any, tensors: list[Any]) -> int:
    def shape(index: int) -> list[int]:
        t = tensors[index]
        return [int(x) for x in t.shape] if t.shape is not None else []

    out = shape(op.outputs[0])
    out_elems = math.prod(out) if out else 1
    if name == "FULLY_CONNECTED":  # weights [units, in]
        return out_elems * shape(op.inputs[1])[-1]
    if name == "CONV_2D":  # weights [out_c, kh, kw, in_c]
        _, kh, kw, in_c = shape(op.inputs[1])
        return out_elems * kh * kw * in_c
    if name == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, out_c]
        _, kh, kw, _ = shape(op.inputs[1])
        return out_elems * kh * kw
    if name == "TRANSPOSE_CONV":  # inputs: output_shape, weights [out_c, kh, kw, in_c], input
        _, kh, kw, in_c = shape(op.inputs[1])
        return out_elems * kh * kw * in_c
    if name == "BATCH_MATMUL":
        return out_elems * shape(op.inputs[0])[-1]
    return 0


def analyse_tflite(model: bytes) -> ModelAnalysis:
    """Read ops (with versions), I/O tensors and a cost estimate from a ``.tflite`` file.

    Raises :class:`ModelError` when the bytes are not a TFLite flatbuffer.
    """
    s = schema()
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise ModelError("not a TFLite model (the flatbuffer identifier 'TFL3' is missing)")
    try:
        m = s.ModelT.InitFromObj(s.Model.GetRootAs(model, 0))
    except Exception as exc:  # the generated parser raises anything on corrupt input
        raise ModelError(f"TFLite flatbuffer is corrupt: {exc!r}") from exc
    op_names = _enum_names("BuiltinOperator")
    codes: list[tuple[str, int, bool]] = []
    for oc in m.operatorCodes or []:
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        if code == s.BuiltinOperator.CUSTOM:
            custom = oc.customCode.decode() if isinstance(oc.customCode, bytes) else oc.customCode
            codes.append((str(custom), oc.version, True))
        else:
            codes.append((op_names.get(code, f"BUILTIN_{code}"), oc.version, False))
    counts = [0] * len(codes)
    macs = elementwise = operators = 0
    for sg in m.subgraphs or []:
        for op in sg.operators or []:
            counts[op.opcodeIndex] += 1
            operators += 1
            name = codes[op.opcodeIndex][0]
            if name in _MAC_OPS:
                macs += _op_macs(name, op, sg.tensors)
            elif op.outputs is not None and len(op.outputs) > 0:
                t = sg.tensors[op.outputs[0]]
                elementwise += math.prod(int(x) for x in t.shape) if t.shape is not None else 1
    ops = tuple(
        OpUse(name, version, count, custom)
        for (name, version, custom), count in zip(codes, counts, strict=True)
    )
    main = m.subgraphs[0]
    return ModelAnalysis(
        size_bytes=len(model),
        ops=ops,
        inputs=tuple(_tensor_spec(main.tensors[i]) for i in main.inputs),
        outputs=tuple(_tensor_spec(main.tensors[i]) for i in main.outputs),
        latency=estimate_latency(macs, elementwise, operators),
        subgraphs=len(m.subgraphs),
    )


@dataclass(frozen=True, slots=True)
class MetricResult:
    """Float vs int8 on the task metric over a named evaluation set.

    ``drop`` is how much worse int8 is: for ``accuracy`` the absolute loss (0.02 = two points),
    for ``reconstruction`` and ``mse`` the relative increase of the error (0.1 = 10 % worse).
    """

    metric: str
    eval_set: str
    samples: int
    float_value: float
    int8_value: float
    drop: float
    max_drop: float | None

    @property
    def passed(self) -> bool:
        return self.max_drop is None or self.drop <= self.max_drop


@dataclass(frozen=True, slots=True)
class TflmSummary:
    """TFLM load + invoke outcome as the report shows it."""

    loaded: bool
    arena_bytes: int  # what to configure: the bisected minimum, else the recorded total
    arena_recorded_bytes: int | None  # RecordingMicroAllocator's total
    arena_min_bytes: int | None  # smallest arena_size that allocated (bisection)
    max_lsb_vs_litert: int | None  # int8 output difference TFLM vs LiteRT on one sample


@dataclass(slots=True)
class ConversionReport:
    source: str
    analysis: ModelAnalysis
    target: str
    tflm: TflmSummary | None = None
    metric: MetricResult | None = None
    notes: list[str] = field(default_factory=list)

    def fits_target(self) -> bool | None:
        """Whether size and arena fit the target class budget (None when unknown)."""
        t = TARGET_CLASSES.get(self.target)
        if t is None or self.tflm is None:
            return None
        return self.analysis.size_bytes <= t.flash_bytes and self.tflm.arena_bytes <= t.ram_bytes

    def to_dict(self) -> dict[str, Any]:
        a = self.analysis
        lat = a.latency
        out: dict[str, Any] = {
            "source": self.source,
            "target": self.target,
            "fits_target": self.fits_target(),
            "size_bytes": a.size_bytes,
            "subgraphs": a.subgraphs,
            "ops": [
                {"name": o.name, "version": o.version, "count": o.count, "custom": o.custom}
                for o in a.ops
            ],
            "inputs": [t.to_dict() for t in a.inputs],
            "outputs": [t.to_dict() for t in a.outputs],
            "latency": {
                "macs": lat.macs,
                "elementwise": lat.elementwise,
                "operators": lat.operators,
                "cycles": lat.cycles,
                "ms": round(lat.ms, 4),
                "class": lat.latency_class,
                "mcu": lat.mcu,
            },
            "tflm": None,
            "metric": None,
            "notes": list(self.notes),
        }
        if self.tflm is not None:
            tf = self.tflm
            out["tflm"] = {
                "loaded": tf.loaded,
                "arena_bytes": tf.arena_bytes,
                "arena_recorded_bytes": tf.arena_recorded_bytes,
                "arena_min_bytes": tf.arena_min_bytes,
                "max_lsb_vs_litert": tf.max_lsb_vs_litert,
            }
        if self.metric is not None:
            m = self.metric
            out["metric"] = {
                "metric": m.metric,
                "eval_set": m.eval_set,
                "samples": m.samples,
                "float": m.float_value,
                "int8": m.int8_value,
                "drop": m.drop,
                "max_drop": m.max_drop,
                "passed": m.passed,
            }
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def render(self, console: Console) -> None:
        """Print the report as Rich tables."""
        a = self.analysis
        summary = Table(title=f"Model report: {self.source}", show_header=False)
        summary.add_column("what", style="bold")
        summary.add_column("value")
        summary.add_row("size", f"{a.size_bytes:,} bytes")
        for t in a.inputs:
            summary.add_row("input", _fmt_tensor(t))
        for t in a.outputs:
            summary.add_row("output", _fmt_tensor(t))
        lat = a.latency
        summary.add_row("cost", f"{lat.macs:,} MACs, {lat.operators} operators")
        summary.add_row("latency (est.)", f"{lat.latency_class} (~{lat.ms:.2f} ms)")
        if self.tflm is not None:
            tr = self.tflm
            arena = f"{tr.arena_bytes:,} bytes"
            detail = []
            if tr.arena_recorded_bytes is not None:
                detail.append(f"recorded {tr.arena_recorded_bytes:,}")
            if tr.arena_min_bytes is not None:
                detail.append(f"bisected {tr.arena_min_bytes:,}")
            summary.add_row("TFLM", "[green]loads and invokes[/green]")
            summary.add_row("arena", arena + (f" ({', '.join(detail)})" if detail else ""))
            if tr.max_lsb_vs_litert is not None:
                summary.add_row("TFLM vs LiteRT", f"max {tr.max_lsb_vs_litert} LSB")
        fits = self.fits_target()
        if fits is not None:
            verdict = "[green]fits[/green]" if fits else "[red]does NOT fit[/red]"
            summary.add_row("target", f"{self.target}: {verdict}")
        if self.metric is not None:
            m = self.metric
            gate = "" if m.max_drop is None else f" (max {m.max_drop:g})"
            colour = "green" if m.passed else "red"
            summary.add_row(
                f"{m.metric} on {m.eval_set!r}",
                f"float {m.float_value:.4f} → int8 {m.int8_value:.4f}, "
                f"[{colour}]drop {m.drop:.4f}{gate}[/{colour}] over {m.samples} samples",
            )
        for note in self.notes:
            summary.add_row("note", note)
        console.print(summary)
        ops = Table(title="Operators")
        ops.add_column("op")
        ops.add_column("version", justify="right")
        ops.add_column("count", justify="right")
        for o in a.ops:
            ops.add_row(o.name + (" (custom)" if o.custom else ""), str(o.version), str(o.count))
        console.print(ops)


def _fmt_tensor(t: TensorSpec) -> str:
    quant = f", scale {t.scale:.6g}, zero point {t.zero_point}" if t.scale else ""
    return f"{t.name or '?'}: {t.dtype}{list(t.shape)}{quant}"
