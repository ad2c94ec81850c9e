"""Load and invoke a model in the real TFLite Micro interpreter; measure its arena.

TFLM reports through C-level stderr (``MicroPrintf``), not through Python exceptions: the
Python wrapper only raises ``RuntimeError("TFLM failed to allocate tensors")``. So while the
interpreter is created and invoked, file descriptor 2 is redirected to a temporary file
(:func:`tinymodels.tflm.capture_c_stderr`) and the text is parsed for the missing op and for the
``RecordingMicroAllocator`` arena total.

The arena is measured twice: the recording allocator's total, and the smallest ``arena_size``
that allocates (bisection). The bisection runs in a child process because the TFLM wrapper
aborts or segfaults after some allocation failures; each trial is a forked child of that
process. It starts at the recorded total, below which nothing can succeed. The bisected
figure is the one to configure (it includes alignment the recording misses); firmware built
with optimised kernels (CMSIS-NN) may need a little more for scratch buffers.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from gateway.errors import ModelError
from tinymodels.tflm import capture_c_stderr

_LOGGER = logging.getLogger(__name__)

# Host memory is cheap; a generous arena makes the load check independent of arena sizing.
CHECK_ARENA_BYTES = 4 * 1024 * 1024
_ALIGN = 16
_MISSING_BUILTIN = re.compile(r"Didn't find op for builtin opcode '([A-Za-z0-9_]+)'")
_MISSING_REGISTRATION = re.compile(r"Failed to get registration from op code ([A-Za-z0-9_]+)")
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")


class UnsupportedOpError(ModelError):
    """The model uses operators the TFLite Micro build cannot resolve."""

    def __init__(self, ops: Sequence[str], tflm_log: str = "") -> None:
        self.ops = tuple(ops)
        self.tflm_log = tflm_log
        names = ", ".join(self.ops)
        super().__init__(
            f"TFLite Micro has no kernel for operator(s) {names}. Replace the layer(s) that "
            f"produce {names} with TFLM-supported ones (e.g. GELU -> relu/hard_swish, "
            "TILE -> broadcasting) and convert again."
        )


@dataclass(frozen=True, slots=True)
class TflmResult:
    arena_bytes: int  # what to configure: bisected minimum if known, else recorded total
    arena_recorded_bytes: int | None
    arena_min_bytes: int | None
    outputs: tuple[tuple[np.ndarray, ...], ...]  # per sample, per output tensor
    log: str  # what TFLM printed


@cache
def tflm_registered_ops() -> frozenset[str]:
    """Op names the installed TFLM Python interpreter registers (from its ``Register_*`` symbols).

    Used only to name the offending op when TFLM's own message cannot be parsed.
    """
    from tflite_micro.python.tflite_micro import _runtime

    data = Path(_runtime.__file__).read_bytes()
    return frozenset(m.decode() for m in re.findall(rb"Register_([A-Z][A-Z0-9_]*[A-Z0-9])", data))


def _unsupported_from_log(log: str) -> list[str]:
    names = _MISSING_BUILTIN.findall(log) + _MISSING_REGISTRATION.findall(log)
    return list(dict.fromkeys(names))


def _unsupported_from_model(model: bytes) -> list[str]:
    from firmware_tools.report import analyse_tflite

    known = tflm_registered_ops()
    return [op.name for op in analyse_tflite(model).ops if op.name not in known]


def _quantize_for(details: dict[str, object], sample: np.ndarray) -> np.ndarray:
    dtype = np.dtype(details["dtype"])  # type: ignore[call-overload]
    shape = tuple(int(x) for x in details["shape"])  # type: ignore[attr-defined]
    if sample.dtype == dtype:
        return sample.reshape(shape)
    if np.issubdtype(dtype, np.integer):
        q = details["quantization_parameters"]
        scale = float(q["scales"][0])  # type: ignore[index]
        zero = int(q["zero_points"][0])  # type: ignore[index]
        info = np.iinfo(dtype)
        values = np.round(sample.astype(np.float64) / scale + zero)
        return np.clip(values, info.min, info.max).astype(dtype).reshape(shape)
    return sample.astype(dtype).reshape(shape)


def check_tflm(
    model: bytes,
    samples: Sequence[np.ndarray] | None = None,
    *,
    bisect: bool = True,
    arena_size: int = CHECK_ARENA_BYTES,
) -> TflmResult:
    """Load ``model`` in TFLite Micro, invoke it on each sample, measure the arena.

    ``samples`` are inputs for input 0, one per invoke (float samples are quantised with the
    input's scale/zero point; int8 samples are used as is). With no samples the model is
    invoked once on zeros. Raises :class:`UnsupportedOpError` naming the operators TFLM lacks,
    or :class:`ModelError` with TFLM's own words for any other failure.
    """
    from tflite_micro.python.tflite_micro import runtime

    outputs: list[tuple[np.ndarray, ...]] = []
    error: Exception | None = None
    with capture_c_stderr() as captured:
        try:
            interp = runtime.Interpreter.from_bytes(model, arena_size=arena_size)
            in_details = interp.get_input_details(0)
            n_outputs = _count_outputs(model)
            batch = list(samples) if samples is not None else [None]
            for sample in batch:
                if sample is None:
                    data = np.zeros(tuple(in_details["shape"]), dtype=in_details["dtype"])
                else:
                    data = _quantize_for(in_details, np.asarray(sample))
                interp.set_input(data, 0)
                interp.invoke()
                outputs.append(tuple(interp.get_output(i).copy() for i in range(n_outputs)))
            interp.print_allocations()
        except (RuntimeError, ValueError) as exc:
            error = exc
    log = captured.text
    if error is not None:
        missing = _unsupported_from_log(log) or _unsupported_from_model(model)
        if missing:
            raise UnsupportedOpError(missing, log) from error
        said = "; ".join(line.strip() for line in log.splitlines() if line.strip())[:500]
        raise ModelError(
            f"TFLite Micro could not run the model: {error}"
            + (f" (TFLM said: {said})" if said else "")
        ) from error
    recorded_match = _ARENA_TOTAL.search(log)
    recorded = int(recorded_match.group(1)) if recorded_match else None
    minimum = bisect_arena(model, recorded) if bisect and recorded is not None else None
    arena = minimum if minimum is not None else recorded
    if arena is None:
        raise ModelError("TFLite Micro did not report its arena use; is tflite-micro too old?")
    return TflmResult(
        arena_bytes=_round_up(arena),
        arena_recorded_bytes=recorded,
        arena_min_bytes=minimum,
        outputs=tuple(outputs),
        log=log,
    )


def _count_outputs(model: bytes) -> int:
    from firmware_tools.report import analyse_tflite

    return len(analyse_tflite(model).outputs)


def _round_up(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


# Each trial runs in a forked child: after a failed allocation the TFLM wrapper aborts on the
# next interpreter it creates, and a too-small arena can segfault; a dead child is a "no".
_BISECT_CHILD = r"""
import os
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime

model = open(sys.argv[1], "rb").read()
lo, hi, step = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
devnull = os.open(os.devnull, os.O_WRONLY)

def allocates(size):
    pid = os.fork()
    if pid == 0:
        os.dup2(devnull, 2)
        try:
            interp = runtime.Interpreter.from_bytes(model, arena_size=size)
            d = interp.get_input_details(0)
            interp.set_input(np.zeros(tuple(d["shape"]), dtype=d["dtype"]), 0)
            interp.invoke()
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0

while not allocates(hi):
    lo, hi = hi, hi * 2
    if hi > (1 << 26):
        print("none")
        sys.exit(0)
if allocates(lo):
    hi = lo
while hi - lo > step:
    mid = (lo + hi) // 2 // step * step
    if mid <= lo:
        break
    if allocates(mid):
        hi = mid
    else:
        lo = mid
print(hi)
"""


def bisect_arena(model: bytes, recorded: int, *, timeout_s: float = 60.0) -> int | None:
    """Smallest ``arena_size`` (to 16 bytes) with which TFLM allocates and invokes ``model``.

    Runs in a child process (see the module docstring); None when it cannot tell.
    """
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(model)
        f.flush()
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _BISECT_CHILD,
                    f.name,
                    *(str(recorded), str(recorded * 2), str(_ALIGN)),
                ],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            _LOGGER.warning("arena bisection timed out after %.0f s", timeout_s)
            return None
    last = proc.stdout.strip().splitlines()[-1:] or [""]
    if proc.returncode != 0 or not last[0].isdigit():
        _LOGGER.warning(
            "arena bisection failed (exit %s): %s", proc.returncode, proc.stderr.strip()[-300:]
        )
        return None
    return int(last[0])
