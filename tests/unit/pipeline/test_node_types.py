"""Per node type, config says which detector and channel map score a node
(``[scoring.node_types.<type>]``, issue 16); a node of no type is scored as before."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from gateway.events import AnomalyScore, Observation, ScoreSource
from gateway.pipeline import ScoringConfig, ScoringPipeline
from gateway.pipeline.config import NodeTypeConfig
from gateway.pipeline.fallback import OWN_BASELINE
from gateway.pipeline.node_types import NodeTypes
from gateway.protocol.messages import Channel
from gateway.store.journal import CommitResult
from tests.unit.pipeline.helpers import (
    SKAB_CHANNELS,
    batches,
    envelope,
    pump_frame,
    running,
    signed_copy,
    write_key_pair,
)
from tinymodels.runtime import load_model

CAL = 120
ROWS = 300
FAULT = 200
# A pump that names its channels its own way: current, discharge pressure, flow.
PUMP_B = (Channel("amps", "A"), Channel("discharge_bar", "bar"), Channel("flow_lpm", "l/min"))
PUMP_B_MAP = {"amps": "Current", "discharge_bar": "Pressure", "flow_lpm": "Volume Flow RateRMS"}


def _frame(seed: int, channels: tuple[Channel, ...] | None) -> np.ndarray:
    x = pump_frame(seed, ROWS, fault_from=FAULT)
    return x if channels is None else x[:, [2, 3, 7]]


async def _scores(
    config: ScoringConfig, nodes: Mapping[str, tuple[Channel, ...] | None]
) -> list[AnomalyScore]:
    """Feed each node ROWS rows (a closing valve from row FAULT) and collect gateway scores."""
    pipeline = ScoringPipeline(config)
    seen: list[Observation] = []
    pipeline.add_sink(seen.extend)
    async with running(pipeline):
        for k, (node, channels) in enumerate(nodes.items()):
            for msg in batches(node, _frame(k, channels), channels=channels or SKAB_CHANNELS):
                pipeline.on_commit(
                    CommitResult(
                        envelopes=[envelope(msg)],
                        new_counts=[len(msg.samples)],
                        wall_ms=[tuple(s.t for s in msg.samples)],
                    )
                )
                await asyncio.sleep(0)
        expected = sum(ROWS - CAL for n in nodes if not n.startswith("spare"))
        async with asyncio.timeout(30):
            while sum(isinstance(o, AnomalyScore) for o in seen) < expected:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    return [o for o in seen if isinstance(o, AnomalyScore) and o.source is ScoreSource.GATEWAY]


def _by_node(scores: list[AnomalyScore]) -> dict[str, list[AnomalyScore]]:
    out: dict[str, list[AnomalyScore]] = {}
    for s in scores:
        out.setdefault(s.node_id, []).append(s)
    return out


async def test_the_node_type_picks_the_detector_and_the_channel_map() -> None:
    config = ScoringConfig(
        calibration_rows=CAL,
        max_batch_delay_ms=0,
        node_types={
            "pump_b": NodeTypeConfig(nodes=["pumpb-*"], channel_map=PUMP_B_MAP),
            "spare": NodeTypeConfig(nodes=["spare-*"], detector="off"),
            "watch_only": NodeTypeConfig(nodes=["pumpc-*"], detector="own_baseline"),
        },
    )
    nodes = {"pumpb-1": PUMP_B, "pumpx-1": PUMP_B, "spare-1": None, "pumpc-1": None}
    got = _by_node(await _scores(config, nodes))
    gateway_version = load_model(config.model_path).manifest["version"]

    # Same channels, different type: the typed pump feeds the gateway model through its map,
    # the untyped one (no channel maps by default) is scored from its own baseline.
    assert {s.model_version for s in got["pumpb-1"]} == {gateway_version}
    assert {s.model_version for s in got["pumpx-1"]} == {OWN_BASELINE}
    # A type that is off is not scored; own_baseline wins even where the model would fit.
    assert "spare-1" not in got
    assert {s.model_version for s in got["pumpc-1"]} == {OWN_BASELINE}
    for node in ("pumpb-1", "pumpx-1", "pumpc-1"):
        assert len(got[node]) == ROWS - CAL
    # The map really feeds the model: the closing valve shows, named by the model's channels.
    t_fault = got["pumpb-1"][0].t_ms + (FAULT - CAL) * 1000
    before = [s.score for s in got["pumpb-1"] if s.t_ms < t_fault]
    after = [s for s in got["pumpb-1"] if s.t_ms >= t_fault + 10_000]
    assert np.quantile(before, 0.9) < 1.5
    assert min(s.score for s in after) > 2.0
    assert after[-1].channels
    assert after[-1].channels[0][0] in {"pressure", "flow", "Pressure", "Volume Flow RateRMS"}


async def test_a_node_type_with_its_own_model_is_scored_by_that_model(tmp_path: Path) -> None:
    key, pub = write_key_pair(tmp_path)
    own = signed_copy(tmp_path / "typed", key, version="9.9.0", sequence=2)
    config = ScoringConfig(
        calibration_rows=CAL,
        max_batch_delay_ms=0,
        public_key_path=pub,
        node_types={
            "pump_b": NodeTypeConfig(nodes=["pumpb-*"], model_path=own, channel_map=PUMP_B_MAP)
        },
    )
    got = _by_node(await _scores(config, {"pumpb-1": PUMP_B, "pump-1": None}))
    assert {s.model_version for s in got["pumpb-1"]} == {"9.9.0"}
    assert {s.model_version for s in got["pump-1"]} == {"2.0.0"}


def test_a_node_belongs_to_the_first_type_that_matches_and_a_type_needs_nodes() -> None:
    config = ScoringConfig(
        node_types={
            "first": NodeTypeConfig(nodes=["pump-0[1-3]"]),
            "second": NodeTypeConfig(nodes=["pump-*"], detector="off"),
        }
    )
    types = NodeTypes(config, load_model(config.model_path))
    assert [types.type_of(n) for n in ("pump-02", "pump-07", "fan-1")] == [
        "first",
        "second",
        None,
    ]
    assert types.plan("fan-1", PUMP_B) is None  # no type: the caller's default plan
    assert types.plan("pump-07", PUMP_B) == (None, "")
    with pytest.raises(ValidationError):
        NodeTypeConfig(nodes=[])
    with pytest.raises(ValidationError):
        NodeTypeConfig(nodes=["x"], detector="magic")
