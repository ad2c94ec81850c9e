"""The event JSON every output sends: documented fields, lossless round trip."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from gateway.events import AlertEventKind, Severity
from gateway.outputs.email import message_id
from gateway.outputs.payload import SCHEMA, decode_event, encode_event, script_env
from tests.unit.outputs.helpers import make_event


def test_body_has_the_documented_fields() -> None:
    body = json.loads(encode_event(make_event(3), "site1"))
    assert body["schema"] == SCHEMA
    assert body["event_id"] == "vibration_high:pump-07:3:raised:1"
    assert body["site"] == "site1"
    assert body["kind"] == "raised"
    assert body["alert"]["severity"] == "critical"
    assert body["alert"]["node_id"] == "pump-07"
    assert set(body["alert"]) == {
        "alert_id",
        "key",
        "rule",
        "node_id",
        "severity",
        "state",
        "message",
        "value",
        "raised_at_ms",
        "acked_at_ms",
        "acked_by",
        "ack_comment",
        "cleared_at_ms",
        "escalations",
    }


@given(
    n=st.integers(0, 10**6),
    kind=st.sampled_from(AlertEventKind),
    severity=st.sampled_from(Severity),
    value=st.none() | st.floats(allow_nan=False, allow_infinity=False),
)
def test_decode_inverts_encode(
    n: int, kind: AlertEventKind, severity: Severity, value: float | None
) -> None:
    event = make_event(n, kind=kind, severity=severity, value=value)
    assert decode_event(encode_event(event, "s")) == (event, "s")


def test_non_finite_values_become_null() -> None:
    body = json.loads(encode_event(make_event(1, value=float("nan")), "s"))
    assert body["alert"]["value"] is None


def test_script_env_names_the_event() -> None:
    env = script_env(make_event(2, kind=AlertEventKind.CLEARED), "farm")
    assert env["FIELDGATE_EVENT_ID"] == "vibration_high:pump-07:2:cleared:1"
    assert env["FIELDGATE_EVENT_KIND"] == "cleared"
    assert env["FIELDGATE_NODE_ID"] == "pump-07"
    assert env["FIELDGATE_SITE"] == "farm"
    assert all(isinstance(v, str) for v in env.values())


def test_message_id_is_deterministic_and_distinct_per_event() -> None:
    a, b = make_event(1).event_id, make_event(2).event_id
    assert message_id(a, "s") == message_id(a, "s")
    assert message_id(a, "s") != message_id(b, "s")
    assert message_id(a, "s").startswith("<")
    assert message_id(a, "s").endswith(">")
