"""The simulator runs the shipped node model (windows of vib_rms, current, pressure, flow) in
the real TFLite Micro interpreter by default, picking its channels by name (issue 16)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from firmware_tools.sim.node import NodeConfig, NodeLogic
from firmware_tools.sim.replay import SKAB_CHANNELS
from firmware_tools.sim.signals import PUMP_CHANNELS, Fault, FaultKind, PumpSignal
from firmware_tools.sim.tflm import DEFAULT_NODE_MODEL, TflmModel
from gateway.protocol.messages import NodeInference

pytest.importorskip("tflite_micro")
NAMES = tuple(c.name for c in PUMP_CHANNELS)


def test_the_default_model_is_the_shipped_node_window_model() -> None:
    manifest = json.loads(DEFAULT_NODE_MODEL.with_suffix(".json").read_text())
    assert manifest["name"] == "node_window_model"
    assert manifest["target"] == "node"


def test_a_simulated_pump_node_scores_itself_and_a_closing_valve_stands_out() -> None:
    model = TflmModel.from_file(DEFAULT_NODE_MODEL, n_channels=len(NAMES), channel_names=NAMES)
    manifest = json.loads(DEFAULT_NODE_MODEL.with_suffix(".json").read_text())
    assert model.window == manifest["features"]["window"]
    node = NodeLogic(NodeConfig("pump-01", PUMP_CHANNELS, batch_size=10, seed=2), model=model)
    fit = manifest["features"]["fit_rows"]
    signal = PumpSignal(rate_hz=10, seed=2, faults=[Fault(FaultKind.VALVE_CLOSED, 60, 30)])
    results: list[tuple[float, NodeInference]] = []
    for sample in signal.take(1000):
        for msg in node.add_sample(round(sample.t_s * 1000), sample.values):
            if isinstance(msg, NodeInference):
                results.append((sample.t_s, msg))
    assert results, "the node never scored"
    assert min(t for t, _ in results) >= (fit - 1) / 10  # calibrates on its first fit_rows
    assert {m.model_id for _, m in results} == {"node_window_model"}
    # Raw scores: divided by the manifest threshold they are in threshold units.
    normal = [m.score / manifest["threshold"] for t, m in results if t < 58]
    faulty = [m.score / manifest["threshold"] for t, m in results if 64 <= t < 90]
    assert np.median(normal) < 1.0
    assert np.median(faulty) > 3 * max(np.median(normal), 0.1)


def test_a_skab_replay_node_feeds_the_model_by_its_channel_names() -> None:
    names = tuple(c.name for c in SKAB_CHANNELS)
    model = TflmModel.from_file(DEFAULT_NODE_MODEL, n_channels=len(names), channel_names=names)
    assert model.window == 8


def test_a_node_without_the_models_channels_is_refused_with_what_is_missing() -> None:
    with pytest.raises(ValueError, match="Pressure"):
        TflmModel.from_file(
            DEFAULT_NODE_MODEL, n_channels=3, channel_names=("current", "flow", "vib_rms")
        )
