"""Run a model in the real TFLite Micro interpreter and measure its tensor arena.

TFLM reports allocations by printing to the C-level stderr, so the measurement captures
file descriptor 2 (not ``sys.stderr``) into a temporary file while it prints.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

# Arena size to hand the interpreter while measuring; the real need is read back from it.
MEASURE_ARENA_BYTES = 64 * 1024
_TOTAL_RE = re.compile(r"\[RecordingMicroAllocator\] Arena allocation total (\d+) bytes")
_HEAD_RE = re.compile(r"Arena allocation head (\d+) bytes")
_TAIL_RE = re.compile(r"Arena allocation tail (\d+) bytes")


@dataclass(frozen=True, slots=True)
class ArenaReport:
    total_bytes: int
    head_bytes: int | None
    tail_bytes: int | None
    raw: str


class CapturedText:
    """What the C code printed on file descriptor 2; set when the ``with`` block ends."""

    text = ""


@contextlib.contextmanager
def capture_c_stderr() -> Iterator[CapturedText]:
    """Redirect file descriptor 2 (C ``stderr``, not ``sys.stderr``) to a temp file.

    TFLM reports its arena and TF/LiteRT their C++ logs there; the text is set on exit.
    The one fd-2 capture of the project: the converter, the TFLM check and the simulated
    node's self-test all use it.
    """
    captured = CapturedText()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read().decode("utf-8", errors="replace")


def make_interpreter(model: bytes, arena_bytes: int = MEASURE_ARENA_BYTES) -> Any:
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model, arena_size=arena_bytes)


def measure_arena(model: bytes) -> ArenaReport:
    """Allocate the model in TFLM and return the arena it actually used."""
    with capture_c_stderr() as captured:
        interp = make_interpreter(model)
        interp.print_allocations()
    raw = captured.text
    total = _TOTAL_RE.search(raw)
    if total is None:
        raise RuntimeError(f"TFLM did not report an arena total; it printed: {raw[:400]!r}")
    head, tail = _HEAD_RE.search(raw), _TAIL_RE.search(raw)
    return ArenaReport(
        total_bytes=int(total.group(1)),
        head_bytes=int(head.group(1)) if head else None,
        tail_bytes=int(tail.group(1)) if tail else None,
        raw=raw,
    )


def run_int8(model: bytes, inputs: npt.NDArray[np.int8], arena_bytes: int) -> npt.NDArray[np.int8]:
    """Invoke TFLM once per row of already-quantised int8 ``inputs``; returns int8 outputs."""
    with capture_c_stderr():
        interp = make_interpreter(model, arena_bytes)
    outs = []
    for row in inputs:
        interp.set_input(row[None, :].astype(np.int8), 0)
        interp.invoke()
        outs.append(np.array(interp.get_output(0)).reshape(-1))
    return np.stack(outs).astype(np.int8)
