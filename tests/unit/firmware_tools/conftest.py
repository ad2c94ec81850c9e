"""Fixtures for flash-model tests.

``build_fc_tflite`` writes a one-operator int8 TFLite flatbuffer with the schema bindings,
so manifest, signing and C-export tests run without TensorFlow (which takes seconds to import).
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
import pytest

from firmware_tools.report import schema

# Builtin codes above 127 are stored in the deprecated byte as this placeholder.
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127


def _quant(scale: float, zero_point: int) -> object:
    s = schema()
    q = s.QuantizationParametersT()
    q.scale = [scale]
    q.zeroPoint = [zero_point]
    return q


def _tensor(name: str, shape: list[int], ttype: int, buffer: int, quant: object) -> object:
    t = schema().TensorT()
    t.name = name.encode()
    t.shape = shape
    t.type = ttype
    t.buffer = buffer
    t.quantization = quant
    return t


def build_fc_tflite(op: str = "FULLY_CONNECTED", seed: int = 0) -> bytes:
    """A [1,4] -> [1,2] int8 model of one operator (``op`` names the builtin code it claims)."""
    s = schema()
    rng = np.random.default_rng(seed)
    weights = rng.integers(-127, 128, size=(2, 4), dtype=np.int8)
    bias = rng.integers(-100, 100, size=(2,), dtype=np.int32)
    buffers = []
    for data in (None, weights.tobytes(), bias.tobytes()):
        b = s.BufferT()
        b.data = list(data) if data is not None else None
        buffers.append(b)
    tensors = [
        _tensor("input", [1, 4], s.TensorType.INT8, 0, _quant(0.05, 0)),
        _tensor("weights", [2, 4], s.TensorType.INT8, 1, _quant(0.01, 0)),
        _tensor("bias", [2], s.TensorType.INT32, 2, _quant(0.0005, 0)),
        _tensor("output", [1, 2], s.TensorType.INT8, 0, _quant(0.02, -3)),
    ]
    code = getattr(s.BuiltinOperator, op)
    opcode = s.OperatorCodeT()
    opcode.builtinCode = code
    opcode.deprecatedBuiltinCode = min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES)
    opcode.version = 1
    operator = s.OperatorT()
    operator.opcodeIndex = 0
    operator.inputs = [0, 1, 2]
    operator.outputs = [3]
    operator.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    operator.builtinOptions = s.FullyConnectedOptionsT()
    sub = s.SubGraphT()
    sub.tensors = tensors
    sub.inputs = [0]
    sub.outputs = [3]
    sub.operators = [operator]
    sub.name = b"main"
    model = s.ModelT()
    model.version = 3
    model.description = b"fieldgate test model"
    model.operatorCodes = [opcode]
    model.subgraphs = [sub]
    model.buffers = buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.fixture(scope="session")
def fc_tflite() -> bytes:
    return build_fc_tflite()


@pytest.fixture
def fc_model_file(tmp_path: Path, fc_tflite: bytes) -> Path:
    path = tmp_path / "fc.tflite"
    path.write_bytes(fc_tflite)
    return path
