"""The ReadingBatch fast path is an optimisation only: it never changes what is accepted."""

from __future__ import annotations

import copy
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import PayloadError
from gateway.protocol.messages import ReadingBatch
from gateway.protocol.payload import decode, encode_message, fast, message_from_map
from tests.unit.protocol.strategies import reading_batches

# Replacement values that are wrong in ways a fast path could miss: bools alias ints,
# floats equal ints, NaN, out-of-range, wrong containers.
_ODD_VALUES: st.SearchStrategy[object] = st.sampled_from(
    [True, False, 1.0, 0, -1, 2**32, 2**63, float("nan"), float("inf"), "x", b"x", None, [], {}]
)


def _full(obj: Any) -> Any:
    try:
        return decode.full_message_from_map(copy.deepcopy(obj), json=False)
    except PayloadError as exc:
        return exc.reason


def _through_public_path(obj: Any) -> Any:
    try:
        return message_from_map(copy.deepcopy(obj))
    except PayloadError as exc:
        return exc.reason


@settings(max_examples=300)
@given(reading_batches(), st.data())
def test_the_fast_path_and_the_full_path_agree_on_valid_and_mutated_batches(
    batch: ReadingBatch, data: st.DataObject
) -> None:
    obj = cbor2.loads(encode_message(batch))
    # Warm the channel cache the way a first message from the node would.
    assert message_from_map(copy.deepcopy(obj)) == batch
    mutation = data.draw(
        st.sampled_from(
            [
                "none",
                "top",
                "sample_value",
                "sample_t",
                "sample",
                "channel",
                "channel_name",
                "bool_key",
            ]
        )
    )
    if mutation == "top":
        obj[data.draw(st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8]))] = data.draw(_ODD_VALUES)
    elif mutation == "sample_value":
        obj[8][0][1][0] = data.draw(_ODD_VALUES)
    elif mutation == "sample_t":
        obj[8][0][0] = data.draw(_ODD_VALUES)
    elif mutation == "sample":
        obj[8][0] = data.draw(_ODD_VALUES)
    elif mutation == "channel":
        obj[7][0] = data.draw(_ODD_VALUES)
    elif mutation == "channel_name":
        obj[7][0][0] = data.draw(_ODD_VALUES)
    elif mutation == "bool_key":
        obj[True] = obj.pop(1)
    assert _through_public_path(obj) == _full(obj)


def test_a_batch_whose_channel_list_was_never_validated_takes_the_full_path() -> None:
    obj = {0: 1, 1: 1, 2: "n1", 3: 1, 4: 1, 5: 0, 7: [["a", "A"], ["a", "A"]], 8: [[1, [1.0, 2.0]]]}
    assert fast.fast_reading_batch(obj) is None
    reason = _through_public_path(obj)
    assert isinstance(reason, str)
    assert "appears twice" in reason
