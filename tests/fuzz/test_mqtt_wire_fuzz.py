"""Hostile bytes from a broker into the MQTT packet reader: only MqttWireError comes out,
quickly, and the reader never holds more than one packet's worth of unread bytes.

1,000 examples in the default run, 10,000 under ``-m slow`` (tests/fuzz/test_fuzz_long.py).
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.protocol import mqtt_wire as wire
from gateway.protocol.mqtt_wire import MqttWireError, PacketReader
from tests.fuzz.conftest import FUZZ_EXAMPLES, MAX_CALL_S
from tests.fuzz.test_codec_fuzz import mutated

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_PACKET = 256  # below some seeds' packets: the size check is fuzzed too

# A broker's stream: session start, a backlog with a redelivery, a ping answered.
SEEDS = [
    wire.encode_connack(0, session_present=True)
    + wire.encode_suback(1, [1, 1, 1])
    + wire.encode_publish("fieldgate/s1/pump-01/readings", bytes(range(40)), 1, 7)
    + wire.encode_publish("fieldgate/s1/pump-01/readings", b"\xa1" * 200, 1, 7, dup=True)
    + wire.encode_publish("fieldgate/s1/pump-02/status", b"{}", 0, retain=True)
    + wire.encode_puback(2)
    + wire.PINGRESP,
    wire.encode_publish("t", b"x" * 300, 1, 0xFFFF) + wire.encode_connack(4),
    wire.encode_suback(0xABCD, [0x80]) + wire.encode_publish("a/b", b"", 0),
]


@FUZZ
@given(
    st.one_of(st.binary(max_size=600), mutated(SEEDS)),
    st.lists(st.integers(0, 700), max_size=8),
)
def test_the_packet_reader_raises_only_mqtt_wire_error(stream: bytes, cuts: list[int]) -> None:
    reader = PacketReader(MAX_PACKET)
    start = time.perf_counter()
    reason = ""
    try:
        at = 0
        for cut in [*sorted(cuts), len(stream)]:
            reader.feed(stream[at:cut])
            at = max(at, cut)
            while (packet := reader.next()) is not None:
                assert isinstance(
                    packet, wire.Publish | wire.Connack | wire.Suback | wire.Puback | wire.Pingresp
                )
            # What waits is at most one packet: header plus the largest body allowed.
            assert reader.buffered <= MAX_PACKET + 5
    except MqttWireError as exc:
        reason = exc.reason
    assert time.perf_counter() - start < MAX_CALL_S
    assert not reason or "packet at stream byte" in reason  # every error says where
