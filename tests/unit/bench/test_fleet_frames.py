"""The cheap load generator's pre-encoded messages decode to exactly the messages meant."""

from __future__ import annotations

import numpy as np
import pytest

from bench.fleet_frames import FramedNode, mqtt_connect, mqtt_remaining_length
from gateway.protocol.framing import FrameDecoder
from gateway.protocol.messages import Channel, ReadingBatch, TimeBase
from gateway.protocol.payload import decode_message

CHANNELS = (Channel("current", "A"), Channel("flow", "l/min"), Channel("vib_rms", "m/s2"))


def node(batch: int = 4, rows: int = 10) -> tuple[FramedNode, np.ndarray]:
    values = np.random.default_rng(1).normal(50, 20, size=(rows, len(CHANNELS)))
    return FramedNode("bg-01", 77, CHANNELS, values, batch=batch, rate_hz=250.0, site="s1"), values


def batch(payload: bytes) -> ReadingBatch:
    msg = decode_message(payload)
    assert isinstance(msg, ReadingBatch)
    return msg


def test_a_payload_decodes_to_the_batch_of_the_next_samples() -> None:
    n, values = node()
    msg = decode_message(n.payload(1000.0))
    assert isinstance(msg, ReadingBatch)
    assert (msg.node_id, msg.boot_id, msg.seq, msg.time_base) == (
        "bg-01",
        77,
        1,
        TimeBase.UPTIME_MS,
    )
    assert msg.channels == CHANNELS
    assert [s.t for s in msg.samples] == [1000, 1004, 1008, 1012]
    assert [s.values for s in msg.samples] == [tuple(row) for row in values[:4]]


def test_sequence_numbers_follow_the_samples_and_the_signal_plays_back_without_a_jump() -> None:
    n, values = node(batch=4, rows=10)
    msgs = [batch(n.payload(0.0)) for _ in range(6)]  # 24 samples of a 20-row ring
    assert [m.seq for m in msgs] == [1, 5, 9, 13, 17, 21]
    played = [s.values for m in msgs for s in m.samples]
    ring = [tuple(r) for r in values] + [tuple(r) for r in values[::-1]]
    assert played == ring + ring[:4]


def test_mqtt_publish_is_a_qos1_packet_of_the_payload_on_the_readings_topic() -> None:
    n, _ = node()
    payload = n.payload(0.0)
    packet = n.publish(513, payload)
    topic = b"fieldgate/s1/bg-01/readings"
    assert packet[0] == 0x32  # PUBLISH, QoS 1
    head = 1 + len(mqtt_remaining_length(2 + len(topic) + 2 + len(payload)))
    assert packet[head : head + 2 + len(topic)] == len(topic).to_bytes(2, "big") + topic
    assert packet[head + 2 + len(topic) : head + 4 + len(topic)] == (513).to_bytes(2, "big")
    assert packet.endswith(payload)
    assert len(payload) == n.payload_len


def test_a_serial_frame_carries_the_payload() -> None:
    n, _ = node()
    payload = n.payload(0.0)
    assert FrameDecoder().feed(n.serial_frame(payload)) == [payload]


@pytest.mark.parametrize(("n", "encoded"), [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"),
                                            (16_383, b"\xff\x7f"), (16_384, b"\x80\x80\x01")])  # fmt: skip
def test_mqtt_remaining_length_is_the_spec_varint(n: int, encoded: bytes) -> None:
    assert mqtt_remaining_length(n) == encoded


def test_connect_is_mqtt_311_with_a_clean_session() -> None:
    packet = mqtt_connect("c1")
    assert packet == b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x00\x00\x02c1"
