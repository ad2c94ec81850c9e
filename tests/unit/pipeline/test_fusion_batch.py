"""Fusing a batch of scores at once gives what fusing them one by one gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.events import AnomalyScore, ScoreSource
from gateway.pipeline.config import DisagreementConfig
from gateway.pipeline.fusion import Fusion
from tinymodels.fusion_rule import FusionRule

# Short holds and settling, so short sequences go through every state.
RULE = FusionRule(weight=0.6, factor=1.1, hold_on=2, hold_off=3, release=0.5, rearm=2.0,
                  min_alarm_rows=3)  # fmt: skip

score = st.builds(
    AnomalyScore,
    st.sampled_from(["a", "b", "c"]),
    st.integers(0, 60_000),
    st.sampled_from([ScoreSource.GATEWAY, ScoreSource.GATEWAY, ScoreSource.NODE]),
    st.floats(0, 6, allow_nan=False),
    st.just("v1"),
)


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(st.lists(score, max_size=30), max_size=6))
def test_fuse_many_is_fuse_one_by_one(batches: list[list[AnomalyScore]]) -> None:
    one = Fusion(DisagreementConfig(max_age_s=20), {}, RULE)
    many = Fusion(DisagreementConfig(max_age_s=20), {}, RULE)
    for batch in batches:
        # The pipeline's order: node scores arrive on their own; a batch of gateway scores is
        # observed, then fused.
        for s in batch:
            if s.source is ScoreSource.NODE:
                one.observe(s)
                many.observe(s)
        gateway = [s for s in batch if s.source is ScoreSource.GATEWAY]
        expected = []
        for s in gateway:
            one.observe(s)
            expected.append(one.fuse(s))
        for s in gateway:
            many.observe(s)
        assert many.fuse_many(gateway) == expected
    assert {n: many.state(n) for n in "abc"} == {n: one.state(n) for n in "abc"}
