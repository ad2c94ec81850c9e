"""``flash-model info-model`` shows a node model's flash size, TFLM arena and int8-vs-float F1
gap from its build manifest (issue 16)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from firmware_tools.cli import app
from tinymodels.node_eval import DEFAULT_NODE_MODEL


def test_info_model_prints_the_build_size_arena_and_quantisation_gap() -> None:
    manifest = json.loads(DEFAULT_NODE_MODEL.with_suffix(".json").read_text())
    result = CliRunner().invoke(
        app, ["info-model", str(DEFAULT_NODE_MODEL)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert f"{manifest['size_bytes']} B flash" in out
    assert f"{manifest['arena_bytes_measured']} B arena measured in TFLM" in out
    assert f"int8-vs-float F1 gap {manifest['evaluation']['f1_gap']:+.4f}" in out


def test_info_model_json_carries_the_build_quality() -> None:
    result = CliRunner().invoke(app, ["info-model", str(DEFAULT_NODE_MODEL), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    quality = doc["build_quality"]
    assert quality["evaluation"]["int8"]["f1"] > 0.7
    assert abs(quality["evaluation"]["f1_gap"]) <= 0.01
