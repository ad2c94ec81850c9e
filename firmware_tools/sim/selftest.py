"""The self-test a node runs on a model booted in test mode, before confirming it.

Firmware does the same: load the image in the TFLite Micro interpreter with the node's arena,
feed a stored probe input, invoke, and check the output is sane - the tensor shapes the signed
manifest promises, and finite numbers after dequantisation. A model that passes its signature
checks but does not run (missing kernel, arena too small, shapes other than declared, NaN/inf
output) fails here, and the node falls back to its previous slot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from firmware_tools.sim.slots import SelfTest, SelfTestFailed
from gateway.protocol.manifest import ModelManifest
from tinymodels.tflm import capture_c_stderr

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SelfTestReport:
    """What a passing self-test saw."""

    output: np.ndarray  # dequantised output for the probe, flattened


def probe_input(shape: tuple[int, ...]) -> np.ndarray:
    """The stored probe: a fixed ramp over [-1, 1] in the model's real (dequantised) units.

    Deterministic, so a node and a host replaying the test feed the same values.
    """
    n = int(np.prod(shape)) if shape else 1
    return np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape(shape)


def run_self_test(artifact: bytes, manifest: ModelManifest, *, arena_bytes: int) -> SelfTestReport:
    """Load ``artifact`` in TFLM with an arena of ``arena_bytes`` and invoke it on the probe.

    Raises :class:`~firmware_tools.sim.slots.SelfTestFailed` saying what was wrong.
    """
    from tflite_micro.python.tflite_micro import runtime

    with capture_c_stderr() as log:
        try:
            interp = runtime.Interpreter.from_bytes(bytes(artifact), arena_size=arena_bytes)
        except (RuntimeError, ValueError) as exc:
            failure: str | None = f"TFLM cannot load the model: {exc}"
        else:
            failure = None
    if failure is not None:
        raise SelfTestFailed(f"{failure} {log.text.strip()}".strip())

    inp = interp.get_input_details(0)
    out = interp.get_output_details(0)
    in_shape = tuple(int(d) for d in inp["shape"])
    out_shape = tuple(int(d) for d in out["shape"])
    if not manifest.inputs or not manifest.outputs:
        raise SelfTestFailed("the manifest declares no input or output tensor")
    want_in, want_out = manifest.inputs[0], manifest.outputs[0]
    if in_shape != want_in.shape:
        raise SelfTestFailed(f"input shape {in_shape}, manifest declares {want_in.shape}")
    if out_shape != want_out.shape:
        raise SelfTestFailed(f"output shape {out_shape}, manifest declares {want_out.shape}")

    x = probe_input(in_shape)
    dtype = np.dtype(inp["dtype"])
    quant = _quant(inp)
    if quant is not None and np.issubdtype(dtype, np.integer):
        scale, zero = quant
        info = np.iinfo(dtype)
        fed = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
    else:
        fed = x.astype(dtype)
    with capture_c_stderr() as log:
        try:
            interp.set_input(fed, 0)
            interp.invoke()
            raw = np.asarray(interp.get_output(0))
        except (RuntimeError, ValueError) as exc:
            failure = f"invoke failed: {exc}"
    if failure is not None:
        raise SelfTestFailed(f"{failure} {log.text.strip()}".strip())
    out_quant = _quant(out)
    y = raw.astype(np.float32)
    if out_quant is not None:
        y = (y - out_quant[1]) * out_quant[0]
    if not np.all(np.isfinite(y)):
        raise SelfTestFailed("the output holds NaN or infinity for the probe input")
    _LOGGER.debug("%s %s: self-test passed", manifest.name, manifest.version)
    return SelfTestReport(output=y.reshape(-1))


def node_self_test(arena_bytes: int) -> SelfTest:
    """The :data:`~firmware_tools.sim.slots.SelfTest` of a node with ``arena_bytes`` of RAM
    for the tensor arena, for :meth:`~firmware_tools.sim.slots.SlotStore.boot_pending`."""

    def self_test(artifact: bytes, manifest: ModelManifest) -> None:
        run_self_test(artifact, manifest, arena_bytes=arena_bytes)

    return self_test


def _quant(detail: dict[str, object]) -> tuple[float, int] | None:
    params = detail.get("quantization_parameters")
    if not isinstance(params, dict):
        return None
    scales = params.get("scales")
    if scales is None or len(scales) == 0:
        return None
    return float(scales[0]), int(params["zero_points"][0])
