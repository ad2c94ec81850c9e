"""observe_many over a batch is observe one by one: the same events, in the same order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.alerts.config import load_alerts_config
from gateway.alerts.engine import AlertEngine
from gateway.events import AnomalyScore, ChannelReading, NodeHealth, Observation, ScoreSource

RULES = {
    "hi": {"kind": "threshold", "channel": "v", "above": 10.0, "hysteresis": 2.0},
    "lo_slow": {"kind": "threshold", "channel": "w", "below": 1.0, "min_duration_s": 0.5},
    "score": {"kind": "anomaly", "source": "gateway", "threshold": 1.0, "nodes": ["n1", "n2"]},
    "quiet": {"kind": "silent", "after_s": 1.0},
    "battery": {"kind": "battery", "below_mv": 3300},
}
NODES = ("n1", "n2", "n3")
value = st.one_of(
    st.floats(-5, 20, allow_nan=False),
    st.sampled_from([10.0, 8.0, 1.0, 0.99, float("nan"), float("inf")]),
)


@st.composite
def observation(draw: st.DrawFn, t_ms: int) -> Observation:
    node = draw(st.sampled_from(NODES))
    t = t_ms + draw(st.integers(0, 400))
    kind = draw(st.sampled_from(["v", "v", "w", "gateway", "fused", "health"]))
    if kind in ("v", "w"):
        return ChannelReading(node, t, kind, draw(value))
    if kind == "health":
        return NodeHealth(node, t, draw(st.sampled_from([None, 3000, 3600])), None, None)
    score = draw(st.floats(0, 3, allow_nan=False))
    return AnomalyScore(node, t, ScoreSource(kind), score, "m1")


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[int, list[Observation]]]:
    """Batches, each followed by a clock tick at its time (so silences and durations fire)."""
    out = []
    t = 0
    for _ in range(draw(st.integers(1, 8))):
        t += draw(st.integers(0, 2500))
        out.append((t, draw(st.lists(observation(t), max_size=40))))
    return out


def engine() -> AlertEngine:
    cfg = {"use_default_rules": False, "rules": RULES, "renotify_interval_s": 0}
    return AlertEngine(load_alerts_config(cfg))


@settings(max_examples=300, deadline=None)
@given(steps=steps())
def test_a_batch_raises_and_clears_exactly_what_its_observations_do_one_by_one(
    steps: list[tuple[int, list[Observation]]],
) -> None:
    one, many = engine(), engine()
    for t, batch in steps:
        expected = [ev for obs in batch for ev in one.observe(obs)]
        assert many.observe_many(batch) == expected
        assert many.tick(t + 450) == one.tick(t + 450)
    assert many.open_alerts() == one.open_alerts()


def test_a_batch_of_quiet_readings_still_keeps_a_node_from_going_silent() -> None:
    eng = engine()
    eng.observe_many([ChannelReading("n3", t, "v", 1.0) for t in range(0, 900, 100)])
    assert eng.tick(1_700) == []  # seen at 800 ms: not silent for 1 s yet
    assert [ev.alert.rule for ev in eng.tick(1_800)] == ["quiet"]
    cleared = eng.observe_many([ChannelReading("n3", 1_900, "v", 1.0)])
    assert [(ev.alert.rule, ev.kind.value) for ev in cleared] == [("quiet", "cleared")]
