"""The CBOR message codec: round trips, the wire bytes firmware must produce, and errors."""

from __future__ import annotations

import dataclasses

import cbor2
import pytest
from hypothesis import given, settings

from gateway.errors import CodecError, PayloadError
from gateway.protocol.messages import (
    Ack,
    Channel,
    Command,
    CommandKind,
    Message,
    NodeInference,
    ReadingBatch,
    Sample,
    Status,
    TimeBase,
)
from gateway.protocol.payload import (
    MAX_MESSAGE_BYTES,
    MAX_SAMPLES,
    Key,
    MessageType,
    decode_message,
    encode_message,
)
from gateway.protocol.payload.encode import ack_head, encode_ack
from tests.unit.protocol import strategies as sts

BATCH = ReadingBatch(
    node_id="pump-07",
    boot_id=7,
    seq=1,
    time_base=TimeBase.UPTIME_MS,
    channels=(Channel("current", "A"),),
    samples=(Sample(1000, (1.5,)), Sample(2000, (0.1,))),
)


def _cbor(m: dict[int, object]) -> bytes:
    return cbor2.dumps(m)


def _batch_map(**overrides: object) -> dict[int, object]:
    m: dict[int, object] = {
        0: 1,
        1: 1,
        2: "pump-07",
        3: 7,
        4: 1,
        5: 0,
        7: [["current", "A"], ["pressure", "bar"]],
        8: [[1000, [1.5, 2.0]], [2000, [1.25, 2.5]]],
    }
    m.update({int(k.removeprefix("k")): v for k, v in overrides.items()})
    return m


def _reason(data: bytes) -> str:
    with pytest.raises(PayloadError) as info:
        decode_message(data)
    return info.value.reason


# -- round trips -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(sts.reading_batches())
def test_reading_batch_round_trips_exactly(batch: ReadingBatch) -> None:
    assert decode_message(encode_message(batch)) == batch


@settings(max_examples=200, deadline=None)
@given(sts.inferences)
def test_node_inference_round_trips_exactly(msg: NodeInference) -> None:
    assert decode_message(encode_message(msg)) == msg


@settings(max_examples=200, deadline=None)
@given(sts.statuses)
def test_status_with_slots_round_trips_exactly(msg: Status) -> None:
    assert decode_message(encode_message(msg)) == msg


@settings(max_examples=200, deadline=None)
@given(sts.acks)
def test_ack_round_trips_exactly(msg: Ack) -> None:
    assert decode_message(encode_message(msg)) == msg


@settings(max_examples=200, deadline=None)
@given(sts.commands())
def test_command_round_trips_with_argument_order_and_types(msg: Command) -> None:
    decoded = decode_message(encode_message(msg))
    assert decoded == msg
    assert isinstance(decoded, Command)
    # bool vs int vs float is preserved, not just equal (True == 1 == 1.0 in Python).
    assert [type(v) for _, v in decoded.args] == [type(v) for _, v in msg.args]


def test_decoded_message_has_the_model_types() -> None:
    decoded = decode_message(encode_message(BATCH))
    assert isinstance(decoded, ReadingBatch)
    assert decoded.time_base is TimeBase.UPTIME_MS
    assert all(type(v) is float for s in decoded.samples for v in s.values)


# -- the bytes on the wire (docs/protocol.md examples) ---------------------------------------


def test_ack_encodes_to_the_documented_bytes() -> None:
    assert encode_message(Ack("pump-07", 7, 42)) == bytes.fromhex(
        "a5 00 01 01 04 02 67 70 75 6d 70 2d 30 37 03 07 16 18 2a"
    )


def test_reading_batch_encodes_to_the_documented_bytes() -> None:
    assert encode_message(BATCH) == bytes.fromhex(
        "a8 00 01 01 01 02 67 70 75 6d 70 2d 30 37 03 07 04 01 05 00"
        " 07 81 82 67 63 75 72 72 65 6e 74 61 41"
        " 08 82 82 19 03 e8 81 f9 3e 00 82 19 07 d0 81 fb 3f b9 99 99 99 99 99 9a"
    )


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (1.5, "f93e00"),  # exact in float16: 3 bytes
        (0.1000000014901161193847656, "fa3dcccccd"),  # a float32 value: 5 bytes
        (0.1, "fb3fb999999999999a"),  # needs float64: 9 bytes
    ],
)
def test_values_use_the_shortest_exact_float_encoding(value: float, encoded: str) -> None:
    batch = dataclasses.replace(BATCH, samples=(Sample(0, (value,)),))
    assert bytes.fromhex(encoded) in encode_message(batch)


def test_a_node_may_send_floats_as_float32_or_integers() -> None:
    m = _batch_map(k8=[[0, [3, 2.5]]])
    data = cbor2.dumps(m).replace(b"\xf9\x41\x00", b"\xfa\x40\x20\x00\x00")
    decoded = decode_message(data)
    assert isinstance(decoded, ReadingBatch)
    assert decoded.samples[0].values == (3.0, 2.5)
    assert all(type(v) is float for v in decoded.samples[0].values)


def test_map_keys_are_the_documented_table() -> None:
    assert [(k.name, k.value) for k in Key][:9] == [
        ("VERSION", 0),
        ("TYPE", 1),
        ("NODE_ID", 2),
        ("BOOT_ID", 3),
        ("SEQ", 4),
        ("TIME_BASE", 5),
        ("T", 6),
        ("CHANNELS", 7),
        ("SAMPLES", 8),
    ]
    assert [t.value for t in MessageType] == [1, 2, 3, 4, 5]


# -- forward compatibility and versions ------------------------------------------------------


def test_unknown_keys_are_ignored() -> None:
    m = _batch_map()
    m[99] = {"future": [1, 2, 3]}
    m[26] = "new field"
    decoded = decode_message(cbor2.dumps(m))
    assert isinstance(decoded, ReadingBatch)
    assert decoded.channels[1] == Channel("pressure", "bar")


def test_non_integer_keys_do_not_alias_integer_keys() -> None:
    # In Python True == 1; a bool key must not be read as the message type.
    data = cbor2.dumps({0: 1, True: 4, 2: "n", 3: 1, 22: 1})
    assert _reason(data) == "message.type (key 1): missing"


def test_unsupported_version_is_a_payload_error() -> None:
    assert _reason(_cbor(_batch_map(k0=2))) == (
        "unsupported protocol version 2 (this gateway speaks 1); "
        "update the gateway or build the node for version 1"
    )


def test_unknown_message_type_is_a_payload_error() -> None:
    assert _reason(_cbor({0: 1, 1: 9})) == "message.type (key 1): unknown message type 9"


# -- validation errors name the field ------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (
            {"k2": "pump 07"},
            "ReadingBatch.node_id: 'pump 07' is not 1..32 characters of [A-Za-z0-9._-]",
        ),
        ({"k3": 2**32}, "ReadingBatch.boot_id: 4294967296 is out of range 0..4294967295"),
        ({"k4": 0}, "ReadingBatch.seq: 0 is out of range 1..4294967295"),
        ({"k4": "1"}, "ReadingBatch.seq: expected an integer, got str"),
        ({"k5": 2}, "ReadingBatch.time_base (key 5): 2 is out of range 0..1"),
        ({"k7": []}, "ReadingBatch.channels (key 7): 0 channels, expected 1..32"),
        (
            {"k7": [["a", "A"], ["a", "B"]]},
            "ReadingBatch.channels[1].name: 'a' appears twice",
        ),
        ({"k8": []}, "ReadingBatch.samples (key 8): 0 samples, expected 1..1024"),
        (
            {"k8": [[1, [1.0, 2.0]], [2, [1.0]]]},
            "ReadingBatch.samples (key 8)[1].values: 1 values for 2 channels",
        ),
        (
            {"k8": [[1, [1.0, float("nan")]]]},
            "ReadingBatch.samples (key 8)[0].values[1]: nan is not a finite number "
            "(NaN and infinities are not sent)",
        ),
        (
            {"k8": [[1, [1.0, True]]]},
            "ReadingBatch.samples (key 8)[0].values[1]: expected a number, got bool",
        ),
        (
            {"k8": [[-1, [1.0, 2.0]]]},
            "ReadingBatch.samples (key 8)[0].t: -1 is out of range 0..9223372036854775807",
        ),
        (
            {"k4": 2**32 - 1},
            "ReadingBatch.seq: 2 samples from seq 4294967295 run past 4294967295; "
            "start a new boot_id before the counter wraps",
        ),
    ],
)
def test_invalid_reading_batch_errors_name_the_field(
    overrides: dict[str, object], reason: str
) -> None:
    assert _reason(_cbor(_batch_map(**overrides))) == reason


def test_missing_field_names_the_key() -> None:
    m = _batch_map()
    del m[4]
    assert _reason(_cbor(m)) == "ReadingBatch.seq (key 4): missing"


def test_too_many_samples_is_rejected() -> None:
    m = _batch_map(k7=[["a", ""]], k8=[[0, [0.0]]] * (MAX_SAMPLES + 1))
    assert _reason(_cbor(m)) == "ReadingBatch.samples (key 8): 1025 samples, expected 1..1024"


def test_command_without_its_required_argument_is_rejected() -> None:
    data = _cbor({0: 1, 1: 5, 2: "n1", 23: 1, 24: 0, 25: [["level", 2.0]]})
    assert _reason(data) == "Command.args: SET_THRESHOLD needs argument 'threshold'"


def test_unknown_command_kind_is_rejected() -> None:
    data = _cbor({0: 1, 1: 5, 2: "n1", 23: 1, 24: 17})
    assert _reason(data) == "Command.kind (key 24): unknown command kind 17"


def test_model_hash_must_be_eight_bytes() -> None:
    msg = NodeInference("n1", 1, 1, TimeBase.UPTIME_MS, 0, "m", "1.0.0", b"\x00" * 8, 0.5, 0, 10)
    m = cbor2.loads(encode_message(msg))
    m[11] = b"\x00" * 32
    assert _reason(_cbor(m)) == "NodeInference.model_hash: 32 bytes, expected 8"


def test_encoding_an_invalid_message_raises_payload_error() -> None:
    bad = dataclasses.replace(BATCH, samples=(Sample(0, (1.0, 2.0)),))
    with pytest.raises(PayloadError, match=r"samples\[0\]\.values: 2 values for 1 channels"):
        encode_message(bad)


def test_encoding_a_non_finite_value_raises_payload_error() -> None:
    bad = dataclasses.replace(BATCH, samples=(Sample(0, (float("inf"),)),))
    with pytest.raises(PayloadError, match="not a finite number"):
        encode_message(bad)


def test_decoded_status_absent_optionals_are_none() -> None:
    data = _cbor({0: 1, 1: 3, 2: "n1", 3: 1, 4: 5, 5: 1, 6: 10, 15: 20, 19: "fw-1", 20: 0})
    msg = decode_message(data)
    assert isinstance(msg, Status)
    assert (msg.battery_mv, msg.rssi_dbm, msg.free_ram_bytes, msg.slots) == (None, None, None, ())


# -- malformed CBOR: errors carry the offset -------------------------------------------------


def test_empty_payload() -> None:
    with pytest.raises(PayloadError) as info:
        decode_message(b"")
    assert str(info.value) == "empty payload: expected a CBOR map (at byte 0 of 0: )"


def test_non_map_top_level_is_rejected_at_byte_zero() -> None:
    with pytest.raises(PayloadError) as info:
        decode_message(b"\x82\x01\x02")
    assert str(info.value) == (
        "expected a CBOR map (first byte 0xa0..0xbf), got 0x82 (at byte 0 of 3: 820102)"
    )


def test_trailing_bytes_are_rejected_at_their_offset() -> None:
    data = encode_message(Ack("n1", 1, 1)) + b"\x00\x00"
    with pytest.raises(PayloadError) as info:
        decode_message(data)
    assert info.value.reason == "2 unexpected bytes after the CBOR map"
    assert info.value.offset == len(data) - 2


def test_truncated_cbor_reports_malformed_at_the_end() -> None:
    data = encode_message(BATCH)[:-3]
    with pytest.raises(PayloadError) as info:
        decode_message(data)
    assert info.value.reason.startswith("malformed CBOR: ")
    assert info.value.offset == len(data)


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("a1 00 c1 00"),  # tag 1 (epoch date)
        bytes.fromhex("a1 00 c2 41 01"),  # tag 2 (bignum)
        bytes.fromhex("a1 00 d8 1d 00"),  # tag 29 (shared reference)
        bytes.fromhex("a1 00 d9 d9 f7 00"),  # tag 55799 (self-describe)
        bytes.fromhex("a1 00 d8 ff 00"),  # an unassigned tag
    ],
)
def test_cbor_tags_are_rejected(data: bytes) -> None:
    assert _reason(data).startswith("malformed CBOR")


def test_duplicate_keys_are_rejected() -> None:
    # {0: 1, 0: 1} written by hand: cbor2 cannot produce it.
    assert _reason(bytes.fromhex("a2 00 01 00 01")).startswith("malformed CBOR")


def test_deep_nesting_is_rejected_without_recursion_error() -> None:
    data = b"\xa1\x63abc" + b"\x81" * 10_000 + b"\x00"
    assert _reason(data).startswith("malformed CBOR")


def test_oversized_message_is_rejected_before_decoding() -> None:
    data = b"\xa0" + b"\x00" * MAX_MESSAGE_BYTES
    with pytest.raises(PayloadError) as info:
        decode_message(data)
    assert info.value.offset == MAX_MESSAGE_BYTES
    assert "larger than the 65536 allowed" in info.value.reason


def test_payload_error_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        decode_message(b"\xff")


def _all_messages() -> list[Message]:
    return [
        BATCH,
        NodeInference("n1", 1, 3, TimeBase.UPTIME_MS, 5, "m", "1.0.0", bytes(8), 0.5, 1, 9),
        Ack("n1", 1, 3),
        Command("n1", 1, CommandKind.REBOOT),
    ]


@pytest.mark.parametrize("msg", _all_messages(), ids=lambda m: type(m).__name__)
def test_every_truncation_of_a_valid_message_is_a_payload_error(msg: Message) -> None:
    data = encode_message(msg)
    for end in range(len(data)):
        with pytest.raises(PayloadError):
            decode_message(data[:end])


def test_status_and_command_encode_to_the_documented_bytes() -> None:
    status = Status(
        "pump-07", 7, 3, TimeBase.UPTIME_MS, 60_000, 60_000, 3300, None, None, "0.4.2", 1
    )
    assert encode_message(status) == bytes.fromhex(
        "ab 00 01 01 03 02 67 70 75 6d 70 2d 30 37 03 07 04 03 05 00 06 19 ea 60"
        " 0f 19 ea 60 10 19 0c e4 13 65 30 2e 34 2e 32 14 01"
    )
    command = Command("pump-07", 5, CommandKind.SET_THRESHOLD, (("threshold", 0.75),))
    assert encode_message(command) == bytes.fromhex(
        "a6 00 01 01 05 02 67 70 75 6d 70 2d 30 37 17 05 18 18 00 18 19 81 82 69"
        " 74 68 72 65 73 68 6f 6c 64 f9 3a 00"
    )


@given(sts.acks)
def test_an_ack_from_its_cached_head_is_the_same_bytes_as_encoding_it_whole(ack: Ack) -> None:
    head = ack_head(ack.node_id, ack.boot_id)
    assert encode_ack(head, ack.up_to_seq) == encode_message(ack)


def test_an_ack_head_refuses_what_an_ack_may_not_carry() -> None:
    with pytest.raises(PayloadError):
        ack_head("no spaces allowed", 1)
    with pytest.raises(PayloadError):
        ack_head("pump-1", 2**32)
    head = ack_head("pump-1", 7)
    for seq in (-1, 2**32):
        with pytest.raises(PayloadError):
            encode_ack(head, seq)
