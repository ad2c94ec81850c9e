"""MQTT topics and payloads: CBOR or JSON by first byte, checked against the topic."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import PayloadError, TopicError
from gateway.protocol.json_payload import decode_json_message, encode_json_message, is_json_payload
from gateway.protocol.messages import (
    Ack,
    Channel,
    Command,
    CommandKind,
    Message,
    ReadingBatch,
    Sample,
    Status,
    TimeBase,
)
from gateway.protocol.mqtt_topics import (
    TopicKind,
    TopicParts,
    decode_mqtt_payload,
    downlink_filters,
    encode_mqtt_payload,
    format_topic,
    kind_of,
    parse_topic,
    topic_for,
    uplink_filters,
)
from gateway.protocol.payload import encode_message
from tests.unit.protocol import strategies as sts

BATCH = ReadingBatch(
    "pump-07",
    7,
    1,
    TimeBase.UPTIME_MS,
    (Channel("current", "A"),),
    (Sample(1000, (1.5,)),),
)


# -- topics ----------------------------------------------------------------------------------


def test_topic_layout() -> None:
    assert (
        format_topic("farm-1", "pump-07", TopicKind.READINGS) == "fieldgate/farm-1/pump-07/readings"
    )
    assert format_topic("farm-1", "pump-07", "cmd") == "fieldgate/farm-1/pump-07/cmd"


@settings(max_examples=200, deadline=None)
@given(sts.node_ids, sts.node_ids, st.sampled_from(TopicKind))
def test_parse_inverts_format(site: str, node_id: str, kind: TopicKind) -> None:
    assert parse_topic(format_topic(site, node_id, kind)) == TopicParts(site, node_id, kind)


@pytest.mark.parametrize(
    ("topic", "reason", "offset"),
    [
        (
            "fieldgate/farm/pump",
            "topic 'fieldgate/farm/pump' has 3 levels, expected fieldgate/<site>/<node>/<kind>",
            0,
        ),
        ("elsewhere/farm/pump/readings", "topic root is 'elsewhere', expected 'fieldgate'", 0),
        (
            "fieldgate/fa rm/pump/readings",
            "site 'fa rm' is not 1..32 characters of [A-Za-z0-9._-]",
            10,
        ),
        (
            "fieldgate/farm/pump+/readings",
            "node id 'pump+' is not 1..32 characters of [A-Za-z0-9._-]",
            15,
        ),
        (
            "fieldgate/farm//readings",
            "node id '' is not 1..32 characters of [A-Za-z0-9._-]",
            15,
        ),
        (
            "fieldgate/farm/pump/reading",
            "kind 'reading' is not one of readings, inference, status, ack, cmd",
            20,
        ),
    ],
)
def test_bad_topics_name_the_level_and_its_offset(topic: str, reason: str, offset: int) -> None:
    with pytest.raises(TopicError) as info:
        parse_topic(topic)
    assert info.value.reason == reason
    assert info.value.offset == offset
    assert info.value.raw == topic.encode()


def test_format_topic_refuses_wildcards() -> None:
    with pytest.raises(TopicError, match="node id 'pump/#'"):
        format_topic("farm", "pump/#", TopicKind.ACK)


def test_subscription_filters() -> None:
    assert uplink_filters() == [
        "fieldgate/+/+/readings",
        "fieldgate/+/+/inference",
        "fieldgate/+/+/status",
    ]
    assert uplink_filters("farm") == [
        "fieldgate/farm/+/readings",
        "fieldgate/farm/+/inference",
        "fieldgate/farm/+/status",
    ]
    assert downlink_filters("farm", "n1") == ["fieldgate/farm/n1/ack", "fieldgate/farm/n1/cmd"]


def test_each_message_type_has_its_topic_kind() -> None:
    assert topic_for("farm", BATCH) == "fieldgate/farm/pump-07/readings"
    assert kind_of(Ack("n", 1, 1)) is TopicKind.ACK
    assert kind_of(Command("n", 1, CommandKind.REBOOT)) is TopicKind.CMD


# -- payloads ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(sts.messages, st.booleans())
def test_mqtt_payload_round_trips_in_cbor_and_json(msg: Message, as_json: bool) -> None:
    payload = encode_mqtt_payload(msg, json=as_json)
    assert is_json_payload(payload) is as_json  # what the gateway answers a node in
    assert decode_mqtt_payload(kind_of(msg), payload, msg.node_id) == msg


def test_json_form_of_a_reading_batch() -> None:
    assert json.loads(encode_json_message(BATCH)) == {
        "v": 1,
        "type": "readings",
        "node_id": "pump-07",
        "boot_id": 7,
        "seq": 1,
        "time_base": "uptime_ms",
        "channels": [["current", "A"]],
        "samples": [[1000, [1.5]]],
    }


def test_hand_written_json_status_decodes() -> None:
    payload = (
        b'{"v": 1, "type": "status", "node_id": "esp-3", "boot_id": 12, "seq": 40,'
        b' "time_base": "unix_ms", "t": 1767225600000, "uptime_ms": 5000,'
        b' "battery_mv": null, "firmware_version": "0.3.1", "oldest_unacked_seq": 38,'
        b' "slots": [{"slot": 0, "model_id": "m", "model_version": "1.0.0",'
        b' "model_hash": "0011223344556677", "sequence": 4, "active": true,'
        b' "confirmed": true}], "comment": "ignored"}'
    )
    msg = decode_mqtt_payload(TopicKind.STATUS, payload, "esp-3")
    assert isinstance(msg, Status)
    assert msg.time_base is TimeBase.UNIX_MS
    assert msg.battery_mv is None
    assert msg.slots[0].model_hash == bytes.fromhex("0011223344556677")


def test_payload_for_another_node_than_the_topic_is_rejected() -> None:
    with pytest.raises(PayloadError) as info:
        decode_mqtt_payload(TopicKind.READINGS, encode_message(BATCH), "pump-08")
    assert info.value.reason == (
        "payload node_id 'pump-07' does not match the topic's node 'pump-08'"
    )


def test_payload_of_the_wrong_type_for_the_topic_is_rejected() -> None:
    with pytest.raises(PayloadError) as info:
        decode_mqtt_payload("status", encode_json_message(BATCH), "pump-07")
    assert info.value.reason == (
        "a ReadingBatch was published on a 'status' topic, which carries Status messages"
    )


@pytest.mark.parametrize(
    ("payload", "reason", "offset"),
    [
        (b'{"v": 1,', "JSON: Expecting property name enclosed in double quotes", 8),
        (b'{"v": 1, "v": 1}', "JSON: key 'v' appears twice in an object", 0),
        (b'{"v": NaN}', "JSON: NaN is not allowed; send finite numbers only", 0),
        (
            b'{"v": 1, "type": "reading"}',
            "message.type: 'reading' is not one of ack, cmd, inference, readings, status",
            0,
        ),
        (b'{"v": 1, "type": "ack", "node_id": "n", "boot_id": 1}', "Ack.up_to_seq: missing", 0),
        (b'{"v": "1"}', "message.v: expected an integer, got str", 0),
        (b"{\xff}", "JSON: invalid UTF-8 (invalid start byte)", 1),
        (b'{"a":' + b"[" * 100_000, "JSON: nested too deeply", 0),
    ],
)
def test_bad_json_is_a_payload_error_with_reason_and_offset(
    payload: bytes, reason: str, offset: int
) -> None:
    with pytest.raises(PayloadError) as info:
        decode_json_message(payload)
    assert (info.value.reason, info.value.offset) == (reason, offset)


def test_json_numbers_too_large_for_their_field_are_rejected() -> None:
    payload = b'{"v":1,"type":"ack","node_id":"n","boot_id":1,"up_to_seq":1e400}'
    with pytest.raises(PayloadError, match=r"Ack\.up_to_seq: expected an integer, got float"):
        decode_json_message(payload)
