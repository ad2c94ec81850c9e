"""Flatbuffer analysis, latency classes and the TFLite Micro check (no TensorFlow needed)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from firmware_tools.report import ConversionReport, TflmSummary, analyse_tflite, estimate_latency
from firmware_tools.tflm_check import UnsupportedOpError, capture_c_stderr, check_tflm
from gateway.errors import ModelError

from .conftest import build_fc_tflite


def test_analysis_lists_ops_with_versions_io_quantisation_and_macs(fc_tflite: bytes) -> None:
    a = analyse_tflite(fc_tflite)
    assert [(o.name, o.version, o.count) for o in a.ops] == [("FULLY_CONNECTED", 1, 1)]
    (inp,) = a.inputs
    assert (inp.shape, inp.dtype, inp.zero_point) == ((1, 4), "int8", 0)
    assert inp.scale == pytest.approx(0.05)
    assert a.latency.macs == 2 * 4
    assert a.latency.latency_class.startswith("<1 ms")


@pytest.mark.parametrize(
    ("macs", "expected"),
    [(10_000, "<1 ms"), (100_000, "1-10 ms"), (1_000_000, "10-100 ms"), (10_000_000, "0.1-1 s")],
)
def test_latency_class_follows_the_documented_cycle_model(macs: int, expected: str) -> None:
    est = estimate_latency(macs, elementwise=0, operators=1)
    assert est.cycles == 2 * macs + 1000
    assert est.latency_class == f"{expected} on Cortex-M4 @ 64 MHz"


def test_garbage_is_not_mistaken_for_a_model() -> None:
    with pytest.raises(ModelError, match="TFL3"):
        analyse_tflite(b"definitely not a flatbuffer")


def test_capture_c_stderr_catches_writes_to_file_descriptor_2() -> None:
    with capture_c_stderr() as captured:
        os.write(2, b"[RecordingMicroAllocator] Arena allocation total 42 bytes\n")
    assert "total 42 bytes" in captured.text


def test_tflm_runs_the_model_and_the_bisected_arena_is_enough(fc_tflite: bytes) -> None:
    samples = list(np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4))
    result = check_tflm(fc_tflite, samples)
    assert len(result.outputs) == 3
    assert result.outputs[0][0].dtype == np.int8
    assert result.arena_recorded_bytes is not None
    assert result.arena_min_bytes is not None
    assert result.arena_min_bytes >= result.arena_recorded_bytes
    # The configured arena must actually work. (Smaller ones are only tried in a child
    # process: after a failed allocation the TFLM wrapper aborts on its next interpreter.)
    assert check_tflm(fc_tflite, arena_size=result.arena_bytes, bisect=False).outputs
    assert result.arena_bytes == result.arena_min_bytes


def test_an_op_tflm_lacks_is_named_in_the_error() -> None:
    gelu = build_fc_tflite(op="GELU")
    with pytest.raises(UnsupportedOpError, match="GELU") as info:
        check_tflm(gelu)
    assert info.value.ops == ("GELU",)
    assert "Didn't find op for builtin opcode 'GELU'" in info.value.tflm_log


def test_report_json_carries_size_ops_arena_and_target_fit(fc_tflite: bytes) -> None:
    report = ConversionReport("fc.tflite", analyse_tflite(fc_tflite), "cortex-m0-32k")
    report.tflm = TflmSummary(True, 1328, 1008, 1328, 0)
    doc = report.to_dict()
    assert doc["size_bytes"] == len(fc_tflite)
    assert doc["ops"] == [{"name": "FULLY_CONNECTED", "version": 1, "count": 1, "custom": False}]
    assert doc["tflm"]["arena_bytes"] == 1328
    assert doc["fits_target"] is True
    report.tflm = TflmSummary(True, 64 * 1024, None, None, None)
    assert report.fits_target() is False
