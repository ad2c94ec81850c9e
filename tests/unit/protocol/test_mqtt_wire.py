"""MQTT 3.1.1 packets, client side: encoded as the standard says, read back whole from any
split of the stream, and every malformed packet refused saying what and where."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import CodecError
from gateway.protocol import mqtt_wire as wire
from gateway.protocol.mqtt_wire import MqttWireError, PacketReader, Publish


def read_all(stream: bytes, cuts: Sequence[int] = (), max_packet: int = 1 << 20) -> list[object]:
    reader = PacketReader(max_packet)
    out: list[object] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        reader.feed(stream[start:cut])
        start = max(start, cut)
        while (packet := reader.next()) is not None:
            out.append(packet)
    assert reader.buffered == 0
    return out


def fails(stream: bytes, match: str, max_packet: int = 1 << 20) -> MqttWireError:
    reader = PacketReader(max_packet)
    reader.feed(stream)
    with pytest.raises(MqttWireError, match=match) as info:
        read_packets(reader)
    return info.value


def read_packets(reader: PacketReader) -> list[object]:
    out: list[object] = []
    while (packet := reader.next()) is not None:
        out.append(packet)
    return out


# -- encoding: byte for byte as in the standard ------------------------------------------------


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        # MQTT 3.1.1 table 2.4: the edges of each length of the remaining length.
        (0, "00"),
        (127, "7f"),
        (128, "80 01"),
        (16_383, "ff 7f"),
        (16_384, "80 80 01"),
        (2_097_151, "ff ff 7f"),
        (2_097_152, "80 80 80 01"),
        (268_435_455, "ff ff ff 7f"),
    ],
)
def test_remaining_length_matches_the_standards_table(n: int, encoded: str) -> None:
    assert wire.encode_remaining_length(n) == bytes.fromhex(encoded)


def test_a_remaining_length_beyond_four_bytes_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="outside"):
        wire.encode_remaining_length(wire.MAX_REMAINING_LENGTH + 1)


def test_connect_carries_client_id_persistent_session_keepalive_and_credentials() -> None:
    packet = wire.encode_connect("gw", keepalive_s=30, username="u", password="pw")
    # Fixed header, "MQTT", level 4, flags user+password (no clean session), keepalive 30,
    # then client id, user name, password.
    assert packet == bytes.fromhex("10 15 0004 4d515454 04 c0 001e 0002 6777 0001 75 0002 7077")
    plain = wire.encode_connect("gw", keepalive_s=60, clean_session=True)
    assert plain == bytes.fromhex("10 0e 0004 4d515454 04 02 003c 0002 6777")


def test_a_password_without_a_user_name_is_refused() -> None:
    with pytest.raises(ValueError, match="user name"):
        wire.encode_connect("gw", keepalive_s=30, password="pw")


def test_subscribe_puback_ping_and_disconnect_are_as_the_standard_says() -> None:
    assert wire.encode_subscribe(10, [("a/+", 1), ("b", 0)]) == bytes.fromhex(
        "82 0c 000a 0003 612f2b 01 0001 62 00"
    )
    assert wire.encode_puback(0x1234) == bytes.fromhex("40 02 1234")
    assert bytes.fromhex("c0 00") == wire.PINGREQ
    assert bytes.fromhex("e0 00") == wire.DISCONNECT


def test_publish_flags_and_packet_id() -> None:
    assert wire.encode_publish("a/b", b"hi", 0) == bytes.fromhex("30 07 0003 612f62 6869")
    assert wire.encode_publish("a/b", b"hi", 1, 5, retain=True, dup=True) == bytes.fromhex(
        "3b 09 0003 612f62 0005 6869"
    )
    # A topic already length-prefixed (as a connection caches it) gives the same bytes.
    assert wire.encode_publish(wire.encode_string("a/b"), b"hi", 0) == wire.encode_publish(
        "a/b", b"hi", 0
    )


@pytest.mark.parametrize(
    ("qos", "mid", "match"),
    [(2, 1, "QoS 2"), (0, 3, "neither packet id"), (1, 0, "packet id 0")],
)
def test_publishes_the_standard_forbids_are_not_encoded(qos: int, mid: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        wire.encode_publish("a", b"", qos, mid)


# -- decoding -------------------------------------------------------------------------------


def test_what_a_broker_sends_is_read_back() -> None:
    stream = (
        wire.encode_connack(0, session_present=True)
        + wire.encode_suback(1, [1, wire.SUBACK_FAILURE])
        + wire.encode_publish("x/y", b"\x00\x01", 1, 9, dup=True)
        + wire.encode_puback(2)
        + wire.PINGRESP
    )
    connack, suback, publish, puback, pingresp = read_all(stream)
    assert isinstance(connack, wire.Connack)
    assert (connack.session_present, connack.refusal) == (True, None)
    assert isinstance(suback, wire.Suback)
    assert (suback.mid, suback.codes) == (1, (1, 0x80))
    assert publish == Publish(b"x/y", b"\x00\x01", 1, 9, retain=False, dup=True)
    assert isinstance(puback, wire.Puback)
    assert puback.mid == 2
    assert isinstance(pingresp, wire.Pingresp)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (1, "unacceptable protocol version"),
        (2, "client identifier rejected"),
        (3, "server unavailable"),
        (4, "bad user name or password"),
        (5, "not authorized"),
        (9, "reserved return code"),
    ],
)
def test_a_refusing_connack_says_why(code: int, reason: str) -> None:
    (connack,) = read_all(wire.encode_connack(code))
    assert isinstance(connack, wire.Connack)
    assert connack.refusal == f"{reason} (CONNACK return code {code})"


def test_a_topic_that_is_not_utf8_is_kept_raw_and_refused_when_read() -> None:
    (publish,) = read_all(wire.encode_publish(b"\x00\x02\xff\xfe", b"p", 0))
    assert isinstance(publish, Publish)
    assert publish.topic_raw == b"\xff\xfe"
    with pytest.raises(UnicodeDecodeError):
        _ = publish.topic


@pytest.mark.parametrize(
    ("hex_stream", "match"),
    [
        ("30 ff ff ff ff 7f", "remaining length runs past four bytes"),
        ("36 05 0001 61 0001", "QoS 3"),
        ("34 05 0001 61 0001", "QoS 2"),
        ("32 04 0001 61 00", "ends inside its topic or packet id"),
        ("32 05 0001 61 0000", "packet id 0"),
        ("38 03 0001 61", "QoS 0 PUBLISH with DUP set"),
        ("30 03 0005 61", "ends inside its topic"),
        ("30 01 00", "too short for its topic length"),
        ("30 02 0000", "empty topic"),
        ("41 02 0001", "PUBACK with reserved flags 0x1"),
        ("40 03 0001 00", "PUBACK with remaining length 3"),
        ("20 02 02 00", "reserved acknowledge flags 0x2"),
        ("90 02 0001", "SUBACK without a return code"),
        ("90 03 0001 03", "invalid return code 0x3"),
        ("d0 01 00", "PINGRESP with 1 bytes of body"),
        ("10 00", "CONNECT is not a packet a broker sends"),
        ("50 02 0001", "PUBREC is not a packet a broker sends"),
        ("00 00", "reserved type 0"),
        ("f0 00", "reserved type 15"),
    ],
)
def test_malformed_packets_are_refused_saying_what(hex_stream: str, match: str) -> None:
    fails(bytes.fromhex(hex_stream), match)


def test_the_error_says_where_in_the_stream_the_bad_packet_starts() -> None:
    good = wire.encode_publish("a", b"12345", 0)  # 10 bytes
    error = fails(good + good + bytes.fromhex("41 02 0001"), "reserved flags")
    assert "packet at stream byte 20" in str(error)
    assert error.raw == bytes.fromhex("41 02 0001")
    assert isinstance(error, CodecError)


def test_a_packet_larger_than_the_maximum_is_refused_before_it_is_buffered() -> None:
    reader = PacketReader(max_packet=100)
    reader.feed(bytes.fromhex("30 e5 00"))  # announces 101 bytes, sends none of them
    with pytest.raises(MqttWireError, match="101 bytes is larger than the maximum 100"):
        reader.next()


def test_a_length_still_arriving_is_waited_for() -> None:
    reader = PacketReader()
    packet = wire.encode_publish("t", b"x" * 20_000, 0)
    reader.feed(packet[:2])  # the first two of three length bytes
    assert reader.next() is None
    reader.feed(packet[2:])
    assert reader.next() == Publish(b"t", b"x" * 20_000, 0, 0, retain=False, dup=False)


def test_a_large_packet_dripping_in_is_read_once_whole() -> None:
    packet = wire.encode_publish("t", bytes(range(256)) * 2000, 1, 3)
    cuts = list(range(1, len(packet), 97))
    (publish,) = read_all(packet, cuts)
    assert isinstance(publish, Publish)
    assert publish.payload == bytes(range(256)) * 2000


# -- round trips over any split of the stream ---------------------------------------------------

topics = st.text(
    st.characters(exclude_characters="#+\x00", exclude_categories=["Cs"]), min_size=1, max_size=40
)
publishes = st.builds(
    lambda topic, payload, qos, mid, retain, dup: Publish(
        topic.encode(), payload, qos, mid if qos else 0, retain=retain, dup=dup and qos == 1
    ),
    topics,
    st.binary(max_size=300),
    st.sampled_from([0, 1]),
    st.integers(1, 0xFFFF),
    st.booleans(),
    st.booleans(),
)


def encoded(p: Publish) -> bytes:
    return wire.encode_publish(p.topic, p.payload, p.qos, p.mid, retain=p.retain, dup=p.dup)


@settings(max_examples=300, deadline=None)
@given(st.lists(publishes, min_size=1, max_size=30), st.lists(st.integers(0, 12_000)))
def test_publishes_round_trip_in_order_over_any_split(
    packets: list[Publish], cuts: list[int]
) -> None:
    stream = b"".join(map(encoded, packets))
    assert read_all(stream, cuts) == packets
    assert [p.topic for p in read_all(stream)] == [p.topic for p in packets]  # type: ignore[attr-defined]


def standard_decode(encoded: bytes) -> int:
    """The decoding algorithm of MQTT 3.1.1 section 2.2.3, as written there."""
    multiplier, value = 1, 0
    for byte in encoded:
        value += (byte & 127) * multiplier
        multiplier *= 128
        if not byte & 128:
            return value
    raise AssertionError("unterminated")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, wire.MAX_REMAINING_LENGTH))
def test_every_remaining_length_encodes_as_the_standard_decodes_it(n: int) -> None:
    encoded_length = wire.encode_remaining_length(n)
    assert 1 <= len(encoded_length) <= 4
    assert standard_decode(encoded_length) == n


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 40_000))
def test_payloads_of_every_length_class_are_read_back(size: int) -> None:
    packet = wire.encode_publish("t", b"\xab" * size, 0)
    (publish,) = read_all(packet, [len(packet) // 2])
    assert isinstance(publish, Publish)
    assert len(publish.payload) == size
