"""Chunking CBOR messages into GATT notifications and writes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import FrameError
from gateway.protocol.ble_chunks import (
    FIRST,
    LAST,
    ChunkDecoder,
    ChunkEncoder,
    max_chunk_for_mtu,
)


def test_a_message_that_fits_is_one_first_and_last_chunk() -> None:
    assert ChunkEncoder(first_counter=5).split(b"abc", 20) == [bytes((FIRST | LAST | 5,)) + b"abc"]


def test_default_mtu_leaves_twenty_bytes() -> None:
    assert max_chunk_for_mtu(23) == 20
    assert max_chunk_for_mtu(247) == 244


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=700), min_size=1, max_size=5),
    st.integers(23, 517),
    st.integers(0, 63),
)
def test_messages_round_trip_through_chunks(messages: list[bytes], mtu: int, start: int) -> None:
    encoder = ChunkEncoder(first_counter=start)
    decoder = ChunkDecoder()
    out: list[bytes | FrameError] = []
    for message in messages:
        chunks = encoder.split(message, max_chunk_for_mtu(mtu))
        assert all(len(c) <= max_chunk_for_mtu(mtu) for c in chunks)
        for chunk in chunks:
            out += decoder.feed(chunk)
    assert out == messages
    assert (decoder.messages_ok, decoder.messages_bad) == (len(messages), 0)


def test_a_lost_chunk_is_reported_and_the_next_message_survives() -> None:
    encoder = ChunkEncoder()
    first = encoder.split(bytes(50), 20)
    second = encoder.split(b"next", 20)
    decoder = ChunkDecoder()
    out = decoder.feed(first[0]) + decoder.feed(first[2]) + decoder.feed(second[0])
    assert len(out) == 3
    err, orphan_err, message = out
    assert isinstance(err, FrameError)
    assert err.reason == "message cut short after 19 bytes: expected counter 1, got 2"
    # The last chunk of the damaged message arrives without its start: one more error.
    assert isinstance(orphan_err, FrameError)
    assert message == b"next"
    assert (decoder.messages_ok, decoder.messages_bad) == (1, 2)


def test_continuation_chunks_without_a_start_are_reported_once() -> None:
    chunks = ChunkEncoder().split(bytes(100), 20)
    decoder = ChunkDecoder()
    out: list[bytes | FrameError] = []
    for chunk in chunks[1:]:
        out += decoder.feed(chunk)
    assert len(out) == 1
    assert isinstance(out[0], FrameError)
    assert out[0].reason == "chunk with counter 1 continues a message whose start was lost"
    assert decoder.chunks_discarded == len(chunks) - 1


def test_oversized_message_is_dropped_and_bounded() -> None:
    encoder = ChunkEncoder()
    decoder = ChunkDecoder(max_message_bytes=100)
    out: list[bytes | FrameError] = []
    for chunk in encoder.split(bytes(1000), 20) + encoder.split(b"ok", 20):
        out += decoder.feed(chunk)
    assert len(out) == 2
    assert isinstance(out[0], FrameError)
    assert out[0].reason == "message longer than max_message_bytes=100"
    assert out[1] == b"ok"


def test_empty_chunk_is_an_error_not_a_crash() -> None:
    out = ChunkDecoder().feed(b"")
    assert len(out) == 1
    assert isinstance(out[0], FrameError)


def test_encoder_refuses_a_chunk_size_without_room() -> None:
    with pytest.raises(ValueError, match="room"):
        ChunkEncoder().split(b"x", 1)


def test_documented_ack_fits_one_chunk_at_the_default_mtu() -> None:
    ack = bytes.fromhex("a5 00 01 01 04 02 67 70 75 6d 70 2d 30 37 03 07 16 18 2a")
    assert ChunkEncoder().split(ack, max_chunk_for_mtu(23)) == [b"\xc0" + ack]
