"""Node and gateway scores are both kept; lasting disagreement is reported, flicker is not."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.events import AnomalyScore, Disagreement, ScoreSource
from gateway.pipeline.config import (
    DEFAULT_NODE_THRESHOLDS,
    DisagreementConfig,
)
from gateway.pipeline.fusion import Fusion
from gateway.protocol.messages import NodeInference, TimeBase
from tinymodels.runtime import DEFAULT_GATEWAY_MODEL, load_manifest


def _gw(t_s: float, score: float) -> AnomalyScore:
    return AnomalyScore("pump-1", int(t_s * 1000), ScoreSource.GATEWAY, score, "2.0.0")


def _node(t_s: float, score: float) -> AnomalyScore:
    return AnomalyScore("pump-1", int(t_s * 1000), ScoreSource.NODE, score, "1.0.0")


def _run(fusion: Fusion, scores: list[AnomalyScore]) -> list[Disagreement]:
    return [d for s in scores if (d := fusion.observe(s)) is not None]


def test_node_score_is_put_in_threshold_units_of_its_model() -> None:
    fusion = Fusion(DisagreementConfig(), {"node_model": 2.0})
    inf = NodeInference(
        "n", 1, 5, TimeBase.UPTIME_MS, 100, "node_model", "1.0.0", b"\0" * 8, 3.0, 1, 900
    )
    score = fusion.node_score(inf, 1234)
    assert score.source is ScoreSource.NODE
    assert score.score == 1.5
    assert score.t_ms == 1234
    assert score.model_version == "1.0.0"
    unknown = NodeInference(
        "n", 1, 6, TimeBase.UPTIME_MS, 100, "other", "0.1.0", b"\0" * 8, 0.7, 0, 9
    )
    assert fusion.node_score(unknown, 0).score == 0.7


def test_default_node_threshold_is_the_shipped_node_models() -> None:
    manifest = load_manifest(DEFAULT_GATEWAY_MODEL.with_name("node_model.tflite"))
    assert DEFAULT_NODE_THRESHOLDS["node_model"] == manifest["threshold"]


def test_disagreement_is_reported_only_after_it_lasts_min_duration_then_repeats() -> None:
    fusion = Fusion(DisagreementConfig(min_duration_s=30, max_age_s=10), {})
    seq = []
    for t in range(0, 100, 5):
        seq += [_gw(t, 3.0), _node(t + 1, 0.2)]  # gateway says anomalous, node says normal
    found = _run(fusion, seq)
    # Disagreement starts at t=1 s; reported at >= 31 s, then every 30 s.
    assert [d.t_ms for d in found] == [31_000, 61_000, 91_000]
    assert found[0].gateway_score == 3.0
    assert found[0].node_score == 0.2
    state = fusion.scores("pump-1")
    assert state is not None
    assert state.gateway is not None
    assert state.node is not None
    assert state.disagreements == 3


def test_flicker_shorter_than_min_duration_never_reports() -> None:
    fusion = Fusion(DisagreementConfig(min_duration_s=30, max_age_s=10), {})
    seq = []
    for t in range(0, 300, 5):
        # They disagree for 20 s in every minute, then agree again.
        gw = 3.0 if t % 60 < 20 else 0.5
        seq += [_gw(t, gw), _node(t, 0.5)]
    assert _run(fusion, seq) == []


def test_stale_scores_are_not_compared() -> None:
    fusion = Fusion(DisagreementConfig(min_duration_s=5, max_age_s=10), {})
    seq = [_node(0, 0.1)] + [_gw(t, 5.0) for t in range(20, 200, 5)]
    assert _run(fusion, seq) == []


def test_both_anomalous_is_agreement() -> None:
    fusion = Fusion(DisagreementConfig(min_duration_s=5, max_age_s=10), {})
    seq = []
    for t in range(0, 100, 2):
        seq += [_gw(t, 4.0), _node(t, 2.0)]
    assert _run(fusion, seq) == []


def test_disabled_rule_keeps_scores_but_never_reports() -> None:
    fusion = Fusion(DisagreementConfig(enabled=False, min_duration_s=1), {})
    seq = []
    for t in range(0, 100, 2):
        seq += [_gw(t, 4.0), _node(t, 0.0)]
    assert _run(fusion, seq) == []
    state = fusion.scores("pump-1")
    assert state is not None
    assert state.gateway == seq[-2]


def test_the_fused_score_combines_a_current_node_score_by_the_rule_and_ignores_a_stale_one() -> (
    None
):
    from tinymodels.fusion_rule import FusionRule

    rule = FusionRule(weight=0.75, factor=1.0, hold_on=1, hold_off=1)
    fusion = Fusion(DisagreementConfig(max_age_s=10), {}, rule)
    fusion.observe(_node(0, 3.0))
    gw = _gw(5, 1.0)
    fusion.observe(gw)
    fused = fusion.fuse(gw)
    assert fused is not None
    assert fused.source is ScoreSource.FUSED
    assert fused.score == pytest.approx(0.75 * 1.0 + 0.25 * 3.0)
    assert fusion.state("pump-1") == "alarm"
    late = _gw(60, 0.4)  # the node score is 60 s old: the gateway's alone
    fusion.observe(late)
    fused_late = fusion.fuse(late)
    assert fused_late is not None
    assert fused_late.score == pytest.approx(0.4)
    assert fusion.state("pump-1") == "normal"
    assert fusion.fuse(_node(61, 9.0)) is None  # only gateway scores produce a fused one
    assert Fusion(DisagreementConfig(), {}).fuse(gw) is None  # no rule, no fused score


@pytest.mark.parametrize("drift_path", [False, True])
def test_the_live_fusion_state_follows_the_offline_rule_row_for_row(drift_path: bool) -> None:
    """What the gateway runs per reading (Fusion.fuse) and what tinymodels.evaluate scores
    (FusionRule.states over whole arrays) are the same state machine."""
    from tinymodels.fusion_rule import FusionRule, load_rule

    rule = load_rule()
    if drift_path:
        rule = FusionRule(0.75, 1.0, 10, 30, release=0.4, cusum_k=0.8, cusum_h=6.0, quick=10)
    t = np.arange(600)
    gateway = 0.6 + 0.3 * np.sin(t / 7.0)
    gateway[100:104] = 3.0  # a blip
    gateway[200:420] = 2.5 + 0.8 * np.cos(t[200:420] / 5.0)  # an anomaly
    gateway[420:500] = 1.6  # settling a little off normal
    node = 0.5 + 0.4 * np.cos(t / 11.0)
    fusion = Fusion(DisagreementConfig(max_age_s=10), {}, rule)
    live = []
    for i, (g, n) in enumerate(zip(gateway.tolist(), node.tolist(), strict=True)):
        fusion.observe(_node(i, n))
        gw = _gw(i, g)
        fusion.observe(gw)
        assert fusion.fuse(gw) is not None
        live.append(fusion.state("pump-1"))
    names = {0: "normal", 1: "alarm", 2: "settled"}
    assert live == [names[s] for s in rule.states(gateway, node).tolist()]
    assert {"normal", "alarm"} <= set(live)
