"""Serial framing: COBS + CRC-32 + 0x00, and the incremental decoder's promises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import FrameError
from gateway.protocol.framing import (
    CRC_LEN,
    FrameDecoder,
    cobs_decode,
    cobs_encode,
    crc32,
    decode_frame_body,
    encode_frame,
    max_encoded_len,
)

payloads = st.binary(min_size=1, max_size=600)


def _summary(results: list[bytes | FrameError]) -> list[object]:
    """Comparable form: payloads as-is, errors by type, reason, raw and offset."""
    return [r if isinstance(r, bytes) else ("error", r.reason, r.raw, r.offset) for r in results]


def _feed_in_pieces(decoder: FrameDecoder, stream: bytes, cuts: list[int]) -> list[object]:
    out: list[bytes | FrameError] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        out += decoder.feed(stream[start:cut])
        start = max(start, cut)
    return _summary(out)


# -- COBS ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        # Examples from the COBS literature (Cheshire & Baker; Wikipedia's table).
        ("00", "01 01"),
        ("00 00", "01 01 01"),
        ("00 11 00", "01 02 11 01"),
        ("11 22 00 33", "03 11 22 02 33"),
        ("11 22 33 44", "05 11 22 33 44"),
        ("11 00 00 00", "02 11 01 01 01"),
        ("", "01"),
    ],
)
def test_cobs_matches_reference_vectors(raw: str, encoded: str) -> None:
    assert cobs_encode(bytes.fromhex(raw)) == bytes.fromhex(encoded)
    assert cobs_decode(bytes.fromhex(encoded)) == bytes.fromhex(raw)


def test_cobs_of_254_non_zero_bytes_uses_one_full_block() -> None:
    data = bytes(range(1, 255))
    assert cobs_encode(data) == b"\xff" + data
    assert cobs_encode(data + b"\x01") == b"\xff" + data + b"\x02\x01"
    # A redundant trailing 0x01 block (as some encoders emit) decodes the same.
    assert cobs_decode(b"\xff" + data + b"\x01") == data


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_cobs_round_trips_and_never_emits_zero(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert b"\x00" not in encoded
    assert len(encoded) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(encoded) == data


def test_cobs_block_running_past_the_end_names_its_offset() -> None:
    with pytest.raises(FrameError) as info:
        cobs_decode(bytes.fromhex("02 11 05 22"))
    assert info.value.reason == (
        "COBS: block at byte 2 announces 4 bytes but only 1 remain (frame truncated?)"
    )
    assert info.value.offset == 2


# -- CRC and frames --------------------------------------------------------------------------


def test_crc_is_crc32_iso_hdlc() -> None:
    assert crc32(b"123456789") == 0xCBF43926


def test_frame_layout_is_cobs_of_payload_and_little_endian_crc_then_zero() -> None:
    frame = encode_frame(b"\x01\x02")
    assert frame[-1:] == b"\x00"
    body = cobs_decode(frame[:-1])
    assert body[:2] == b"\x01\x02"
    assert body[2:] == crc32(b"\x01\x02").to_bytes(4, "little")


def test_documented_frame_example() -> None:
    payload = bytes.fromhex("a5 00 01 01 04 02 67 70 75 6d 70 2d 30 37 03 07 16 18 2a")
    assert encode_frame(payload) == bytes.fromhex(
        "02 a5 16 01 01 04 02 67 70 75 6d 70 2d 30 37 03 07 16 18 2a 3f d7 dd 5e 00"
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(payloads, max_size=8))
def test_frames_round_trip(messages: list[bytes]) -> None:
    decoder = FrameDecoder()
    out = decoder.feed(b"".join(encode_frame(m) for m in messages))
    assert out == messages
    assert decoder.frames_ok == len(messages)
    assert (decoder.frames_bad, decoder.bytes_discarded) == (0, 0)


@settings(max_examples=300, deadline=None)
@given(payloads, st.data())
def test_a_flipped_bit_is_detected(payload: bytes, data: st.DataObject) -> None:
    frame = bytearray(encode_frame(payload))
    index = data.draw(st.integers(0, len(frame) - 2), label="index")
    bit = data.draw(st.integers(0, 7), label="bit")
    frame[index] ^= 1 << bit
    out = FrameDecoder().feed(bytes(frame))
    # A flip may create a 0x00 and split the frame, but never yields the original.
    assert payload not in out
    assert out
    assert all(isinstance(r, FrameError) for r in out)


def test_corrupted_crc_is_reported_with_stream_position() -> None:
    good = encode_frame(b"first")
    body = bytearray(cobs_decode(encode_frame(b"hello")[:-1]))
    body[-1] ^= 0xFF
    bad = cobs_encode(bytes(body)) + b"\x00"
    decoder = FrameDecoder()
    out = decoder.feed(good + bad + good)
    assert out[0] == b"first"
    assert out[2] == b"first"
    err = out[1]
    assert isinstance(err, FrameError)
    assert err.reason.startswith(f"frame starting at stream byte {len(good)}: CRC mismatch: ")
    assert err.raw == bad[:-1]
    assert (decoder.frames_ok, decoder.frames_bad, decoder.bytes_discarded) == (2, 1, len(bad) - 1)


def test_frame_shorter_than_the_crc_is_reported() -> None:
    with pytest.raises(FrameError) as info:
        decode_frame_body(cobs_encode(b"\x01\x02\x03"))
    assert info.value.reason == (
        "frame too short: 3 bytes after COBS, need a payload and a 4-byte CRC"
    )


def test_empty_frames_are_skipped_silently() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00\x00" + encode_frame(b"x") + b"\x00") == [b"x"]
    assert (decoder.frames_ok, decoder.frames_bad) == (1, 0)


# -- resynchronisation and bounds -------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(payloads, min_size=1, max_size=4))
def test_garbage_between_frames_costs_at_most_the_next_frame(
    garbage: bytes, messages: list[bytes]
) -> None:
    frames = [encode_frame(m) for m in messages]
    decoder = FrameDecoder()
    out = decoder.feed(frames[0] + garbage + b"".join(frames[1:]))
    good = [r for r in out if isinstance(r, bytes)]
    assert good[0] == messages[0]
    # Garbage without a 0x00 glues onto the next frame and spoils it; every later frame
    # arrives intact.
    rest = messages[2:]
    assert good[len(good) - len(rest) :] == rest


def test_a_decoder_started_mid_frame_recovers_at_the_next_delimiter() -> None:
    stream = encode_frame(b"lost") + encode_frame(b"kept")
    decoder = FrameDecoder()
    out = decoder.feed(stream[3:])
    assert isinstance(out[0], FrameError)
    assert out[1:] == [b"kept"]


def test_oversized_frame_is_reported_once_and_memory_stays_bounded() -> None:
    decoder = FrameDecoder(max_frame_bytes=64)
    results: list[bytes | FrameError] = []
    for _ in range(1000):
        results += decoder.feed(b"\x55" * 100)
        assert decoder.buffered_bytes <= 64
    results += decoder.feed(b"\x00" + encode_frame(b"after"))
    assert len(results) == 2
    err, after = results
    assert isinstance(err, FrameError)
    assert err.reason == (
        "frame starting at stream byte 0 is longer than max_frame_bytes=64; "
        "discarding it up to the next 0x00"
    )
    assert (len(err.raw), err.offset) == (65, 64)
    assert after == b"after"
    assert decoder.bytes_discarded == 100_000
    assert (decoder.frames_ok, decoder.frames_bad) == (1, 1)


def test_max_payload_bytes_always_fits() -> None:
    for limit in (16, 64, 300, 4096):
        decoder = FrameDecoder(max_frame_bytes=limit)
        n = decoder.max_payload_bytes
        assert max_encoded_len(n) <= limit < max_encoded_len(n + 1)
        worst = b"\x01" * n  # no zeros: the most COBS overhead
        assert decoder.feed(encode_frame(worst)) == [worst]


def test_max_frame_bytes_must_hold_a_crc() -> None:
    with pytest.raises(ValueError, match="at least"):
        FrameDecoder(max_frame_bytes=CRC_LEN)


# -- chunking independence ---------------------------------------------------------------------


def _mixed_stream(messages: list[bytes], garbage: bytes) -> bytes:
    frames = [encode_frame(m) for m in messages]
    return garbage.join(frames) + b"\x55" * 150 + b"\x00" + garbage


@settings(max_examples=300, deadline=None)
@given(
    st.lists(payloads, max_size=5),
    st.binary(max_size=40),
    st.lists(st.integers(0, 5000), max_size=20),
)
def test_random_chunking_gives_the_same_results_as_all_at_once(
    messages: list[bytes], garbage: bytes, cuts: list[int]
) -> None:
    stream = _mixed_stream(messages, garbage)
    whole = FrameDecoder(max_frame_bytes=128)
    expected = _summary(whole.feed(stream))
    pieces = FrameDecoder(max_frame_bytes=128)
    assert _feed_in_pieces(pieces, stream, cuts) == expected
    assert (pieces.frames_ok, pieces.frames_bad, pieces.bytes_discarded) == (
        whole.frames_ok,
        whole.frames_bad,
        whole.bytes_discarded,
    )


@settings(max_examples=50, deadline=None)
@given(st.lists(payloads, max_size=3), st.binary(max_size=20))
def test_byte_by_byte_gives_the_same_results_as_all_at_once(
    messages: list[bytes], garbage: bytes
) -> None:
    stream = _mixed_stream(messages, garbage)
    expected = _summary(FrameDecoder(max_frame_bytes=128).feed(stream))
    decoder = FrameDecoder(max_frame_bytes=128)
    out: list[bytes | FrameError] = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
    assert _summary(out) == expected
