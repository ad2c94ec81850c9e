"""The per-plan row getter the pipeline uses on every sample maps like ChannelMapper.row."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.pipeline.windows import ChannelMapper


@given(
    values=st.lists(st.floats(allow_nan=True), min_size=1, max_size=8).map(tuple),
    data=st.data(),
)
def test_row_getter_is_row_for_any_plan(values: tuple[float, ...], data: st.DataObject) -> None:
    columns = st.integers(-1, len(values) - 1)  # -1: held at baseline (0.0)
    plan = tuple(data.draw(st.lists(columns, min_size=1, max_size=8)))
    got = ChannelMapper.row_getter(plan)(values)
    expected = ChannelMapper.row(plan, values)
    assert len(got) == len(expected)
    assert all(a is b or a == b for a, b in zip(got, expected, strict=True))
    assert [c for c, v in zip(plan, got, strict=True) if c < 0 and v != 0.0] == []
