"""C export: the array compiles, is 16-byte aligned, and the resolver registers exactly the ops."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from firmware_tools.cexport import export_c, resolver_method
from firmware_tools.report import OpUse


@pytest.mark.parametrize(
    ("op", "method"),
    [
        ("FULLY_CONNECTED", "AddFullyConnected"),
        ("CONV_2D", "AddConv2D"),
        ("DEPTHWISE_CONV_2D", "AddDepthwiseConv2D"),
        ("MAX_POOL_2D", "AddMaxPool2D"),
        ("L2_POOL_2D", "AddL2Pool2D"),
        ("RELU6", "AddRelu6"),
        ("BATCH_MATMUL", "AddBatchMatMul"),
        ("UNIDIRECTIONAL_SEQUENCE_LSTM", "AddUnidirectionalSequenceLSTM"),
        ("PADV2", "AddPadV2"),
        ("SPACE_TO_BATCH_ND", "AddSpaceToBatchNd"),
    ],
)
def test_resolver_method_names_match_micro_mutable_op_resolver(op: str, method: str) -> None:
    assert resolver_method(OpUse(op, 1, 1)) == method


def test_resolver_registers_exactly_the_models_ops(fc_tflite: bytes) -> None:
    export = export_c(fc_tflite, "pump-anomaly", arena_bytes=2048)
    assert "tflite::MicroMutableOpResolver<1>" in export.resolver
    assert "resolver.AddFullyConnected()" in export.resolver
    assert export.resolver.count("resolver.Add") == 1
    assert "kPumpAnomalyArenaBytes = 2048" in export.header


def test_unknown_custom_op_stops_the_firmware_build(fc_tflite: bytes) -> None:
    from firmware_tools.report import analyse_tflite

    analysis = analyse_tflite(fc_tflite)
    custom = analysis.__class__(
        analysis.size_bytes,
        (OpUse("MyFancyOp", 1, 1, custom=True),),
        analysis.inputs,
        analysis.outputs,
        analysis.latency,
        analysis.subgraphs,
    )
    assert '#error "custom op MyFancyOp' in export_c(fc_tflite, "m", analysis=custom).resolver


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
def test_exported_array_compiles_aligned_and_reproduces_the_model(
    tmp_path: Path, fc_tflite: bytes
) -> None:
    export = export_c(fc_tflite, "fc")
    export.write(tmp_path)
    (tmp_path / "main.cc").write_text(
        '#include <cstdint>\n#include <cstdio>\n#include "fc_model_data.h"\n'
        "int main() {\n"
        "  if (reinterpret_cast<uintptr_t>(g_fc_model_data) % 16 != 0) return 2;\n"
        "  fwrite(g_fc_model_data, 1, g_fc_model_data_len, stdout);\n"
        "  return 0;\n}\n"
    )
    exe = tmp_path / "dump"
    subprocess.run(
        ["g++", "-std=c++17", "-Wall", "-Werror", "-o", str(exe), "main.cc", "fc_model_data.cc"],
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    run = subprocess.run([str(exe)], capture_output=True, check=True, timeout=10)
    assert run.stdout == fc_tflite
