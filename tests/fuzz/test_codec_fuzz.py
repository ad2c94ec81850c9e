"""Hostile bytes into every decoder: only CodecError subclasses come out, and quickly.

Each decoder gets at least 10,000 examples. Pure random bytes rarely get past a first
check, so most tests also mutate valid encodings, which reaches the deeper code paths.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import CodecError, FrameError, PayloadError, TopicError
from gateway.protocol.adv import decode_adv, encode_adv
from gateway.protocol.ble_chunks import ChunkDecoder
from gateway.protocol.framing import FrameDecoder, encode_frame
from gateway.protocol.json_payload import decode_json_message, encode_json_message
from gateway.protocol.messages import (
    Ack,
    Channel,
    Command,
    CommandKind,
    Message,
    NodeInference,
    ReadingBatch,
    Sample,
    SlotInfo,
    Status,
    TimeBase,
)
from gateway.protocol.mqtt_topics import TopicKind, decode_mqtt_payload, parse_topic
from gateway.protocol.payload import decode_message, encode_message
from tests.unit.protocol import strategies as sts

# One slow call would be a hang in waiting; a decoder call is micro- to milliseconds.
_MAX_CALL_S = 1.0
FUZZ = settings(
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _call(fn: Callable[..., Any], *args: Any, expect: type[CodecError]) -> Any:
    start = time.perf_counter()
    try:
        return fn(*args)
    except expect:
        return None
    finally:
        assert time.perf_counter() - start < _MAX_CALL_S


def _seed_messages() -> list[Message]:
    """A fixed corpus of valid messages; mutating these is far cheaper than generating."""
    batch = ReadingBatch(
        "pump-07",
        7,
        1,
        TimeBase.UPTIME_MS,
        (Channel("current", "A"), Channel("pressure", "bar"), Channel("t", "degC")),
        tuple(Sample(1000 * i, (0.1 * i, 1.5, float(2**40 + i))) for i in range(6)),
    )
    slot = SlotInfo(1, "pump-anomaly", "1.4.0", bytes(range(8)), 12, True, False)
    return [
        batch,
        dataclasses.replace(batch, time_base=TimeBase.UNIX_MS, samples=batch.samples[:1]),
        NodeInference(
            "n1", 2**32 - 1, 9, TimeBase.UPTIME_MS, 5, "m", "1.0.0", bytes(8), -0.5, 3, 900
        ),
        Status("n1", 1, 10, TimeBase.UNIX_MS, 2**41, 5000, 3300, -71, 20_000, "fw-2", 4, (slot,)),
        Status("node.x", 0, 1, TimeBase.UPTIME_MS, 0, 0, None, None, None, "0.0.1", 0),
        Ack("pump-07", 7, 42),
        Command("n1", 1, CommandKind.SET_THRESHOLD, (("threshold", 0.75),)),
        Command("n1", 2, CommandKind.ACTUATE, (("output", "relay-1"), ("state", True), ("n", -3))),
        Command("n1", 3, CommandKind.REBOOT),
    ]


SEEDS = _seed_messages()


def _apply_edits(seed: bytes, script: bytes) -> bytes:
    """Apply an edit script: 4 bytes per edit (operation, position high/low, value)."""
    data = bytearray(seed)
    for k in range(0, len(script) - 3, 4):
        op, hi, lo, value = script[k : k + 4]
        i = ((hi << 8) | lo) % max(len(data), 1)
        op %= 5
        if op == 0 and data:
            data[i] ^= 1 << (value % 8)
        elif op == 1 and data:
            data[i] = value
        elif op == 2:
            data[i:i] = bytes((value,))
        elif op == 3 and data:
            del data[i]
        elif op == 4:
            del data[i:]
    return bytes(data)


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A valid encoding with a few bytes flipped, set, inserted, deleted, or cut off.

    The edits are drawn as one byte string: the cheapest thing Hypothesis generates,
    which keeps 10,000 examples per decoder inside the time budget.
    """
    return st.builds(_apply_edits, st.sampled_from(seeds), st.binary(min_size=4, max_size=16))


cbor_seeds = [encode_message(m) for m in SEEDS]
map_headed = st.builds(lambda h, rest: bytes([h]) + rest, st.integers(0xA0, 0xBF), st.binary())
payload_inputs = st.one_of(st.binary(), map_headed, mutated(cbor_seeds))


@FUZZ
@given(payload_inputs)
def test_decode_message_raises_only_payload_error(data: bytes) -> None:
    msg = _call(decode_message, data, expect=PayloadError)
    if msg is not None:
        # Whatever decodes is a valid message: it re-encodes and round-trips.
        assert decode_message(encode_message(msg)) == msg


frame_seeds = [encode_frame(p) for p in cbor_seeds]
frame_seeds.append(b"".join(frame_seeds))


@FUZZ
@given(st.one_of(st.binary(), mutated(frame_seeds)), st.integers(0, 2000))
def test_frame_decoder_feed_never_raises(stream: bytes, cut: int) -> None:
    # A small limit so oversized frames, as well as damaged ones, are exercised.
    decoder = FrameDecoder(max_frame_bytes=96)
    for chunk in (stream[:cut], stream[cut:]):
        results = _call(decoder.feed, chunk, expect=FrameError)
        assert isinstance(results, list)
        assert all(isinstance(r, bytes | FrameError) for r in results)
        assert decoder.buffered_bytes <= 96


advert_seeds = [
    encode_adv(boot_id=3, seq=9, uptime_s=100, values=[("temperature", 21.34), ("humidity", 55.5)]),
    encode_adv(
        boot_id=0xFFFF,
        seq=0xFFFF,
        uptime_s=0xFF_FFFF,
        values=[("co2", 400), ("level", None), ("voltage", 3.3), ("pressure", 1013.2)],
    ),
]


@FUZZ
@given(
    st.one_of(st.binary(max_size=40), mutated(advert_seeds)),
    st.sampled_from(["bcn-01", "b 1", "", "x" * 33]),
)
def test_decode_adv_raises_only_payload_error(data: bytes, name: str) -> None:
    _call(decode_adv, data, name, expect=PayloadError)


# Text from raw bytes is much cheaper to generate than st.text(); "replace" keeps it str.
raw_text = st.binary(max_size=24).map(lambda b: b.decode("utf-8", "replace"))
topic_levels = st.one_of(
    raw_text,
    st.sampled_from(["fieldgate", "farm-1", "pump-07", "+", "#", "", " ", "\x00", "x" * 33]),
    st.sampled_from(list(TopicKind)),
)


@FUZZ
@given(
    st.one_of(
        raw_text,
        st.lists(topic_levels, max_size=6).map("/".join),
        st.lists(topic_levels, min_size=3, max_size=3).map(lambda ls: "fieldgate/" + "/".join(ls)),
    )
)
def test_parse_topic_raises_only_topic_error(topic: str) -> None:
    _call(parse_topic, topic, expect=TopicError)


json_seeds = [encode_json_message(m) for m in SEEDS]
json_seed_objects = [json.loads(j) for j in json_seeds]
# Values that are wrong somewhere: types, ranges, nesting, names of the other fields.
odd_values: list[object] = [
    None, True, False, 0, -1, 1, 2**32, 2**64, 10**30, 0.5, -0.0, 1e308, "", "x", "n1",
    "readings", "cmd", "uptime_ms", "actuate", "00" * 8, "zz", [], {}, [[]], [[1, [1.5]]],
    [["a", "A"]], [["a", "A"], ["a", "A"]], [[0, []]], [{"slot": 0}], {"threshold": 1.0},
    {"output": 1, "state": "on"}, [1] * 40, "x" * 100,
]  # fmt: skip
field_names = ["v", "type", "node_id", "boot_id", "seq", "time_base", "t", "channels",
               "samples", "model_hash", "slots", "args", "kind", "up_to_seq", "score", "label",
               "firmware_version", "oldest_unacked_seq", "cmd_id", "uptime_ms"]  # fmt: skip


def _with_fields(base: dict[str, object], edits: list[tuple[str, object | None]]) -> bytes:
    obj = dict(base)
    for name, value in edits:
        if value is _DELETE:
            obj.pop(name, None)
        else:
            obj[name] = value
    return json.dumps(obj).encode()


_DELETE = object()
json_objects = st.builds(
    _with_fields,
    st.sampled_from(json_seed_objects),
    st.lists(
        st.tuples(st.sampled_from(field_names), st.sampled_from([*odd_values, _DELETE])),
        min_size=1,
        max_size=3,
    ),
)


@FUZZ
@given(
    st.sampled_from(list(TopicKind)),
    st.one_of(
        payload_inputs,
        st.binary().map(lambda b: b"{" + b),
        mutated(json_seeds),
        json_objects,
    ),
    st.sampled_from(["pump-07", "n1", "node.x"]),
)
def test_decode_mqtt_payload_raises_only_payload_error(
    kind: TopicKind, payload: bytes, node_id: str
) -> None:
    msg: Message | None = _call(decode_mqtt_payload, kind, payload, node_id, expect=PayloadError)
    if msg is not None:
        assert msg.node_id == node_id


@settings(max_examples=2000, deadline=None)
@given(st.one_of(mutated(json_seeds), json_objects))
def test_decode_json_message_round_trips_whatever_it_accepts(payload: bytes) -> None:
    msg = _call(decode_json_message, payload, expect=PayloadError)
    if msg is not None:
        assert decode_json_message(encode_json_message(msg)) == msg


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.binary(max_size=24), max_size=12))
def test_chunk_decoder_feed_never_raises(chunks: list[bytes]) -> None:
    decoder = ChunkDecoder(max_message_bytes=64)
    for chunk in chunks:
        results = _call(decoder.feed, chunk, expect=FrameError)
        assert all(isinstance(r, bytes | FrameError) for r in results)


@settings(max_examples=300, deadline=None)
@given(st.lists(sts.messages, min_size=1, max_size=4), st.binary(max_size=8), st.integers(1, 64))
def test_any_valid_message_survives_framing_and_garbage(
    messages: list[Message], garbage: bytes, step: int
) -> None:
    # Garbage ends in a delimiter so it cannot glue onto the next frame.
    stream = b"".join(garbage + b"\x00" + encode_frame(encode_message(m)) for m in messages)
    decoder = FrameDecoder(max_frame_bytes=65_536)
    out: list[bytes | FrameError] = []
    for i in range(0, len(stream), step):
        out += decoder.feed(stream[i : i + step])
    decoded = [decode_message(r) for r in out if isinstance(r, bytes)]
    assert decoded == messages
