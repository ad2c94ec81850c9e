"""The JSON form of an alert event that every output sends (docs/outputs.md, schema 1).

Pure functions, no I/O. ``event_id`` doubles as the idempotency key of every
notification: a receiver that has seen it may drop the copy.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from gateway.events import Alert, AlertEvent, AlertEventKind, AlertState, Severity

SCHEMA: Final = "fieldgate.alert_event/1"


def event_to_dict(event: AlertEvent, site: str) -> dict[str, Any]:
    alert = event.alert
    return {
        "schema": SCHEMA,
        "event_id": event.event_id,
        "kind": event.kind.value,
        "at_ms": event.at_ms,
        "site": site,
        "alert": {
            "alert_id": alert.alert_id,
            "key": alert.key,
            "rule": alert.rule,
            "node_id": alert.node_id,
            "severity": alert.severity.name.lower(),
            "state": alert.state.value,
            "message": alert.message,
            "value": alert.value,
            "raised_at_ms": alert.raised_at_ms,
            "acked_at_ms": alert.acked_at_ms,
            "acked_by": alert.acked_by,
            "ack_comment": alert.ack_comment,
            "cleared_at_ms": alert.cleared_at_ms,
            "escalations": alert.escalations,
        },
    }


def encode_event(event: AlertEvent, site: str) -> bytes:
    """Compact UTF-8 JSON; NaN/inf values become null (JSON has no such numbers)."""
    data = event_to_dict(event, site)
    value = data["alert"]["value"]
    if value is not None and not math.isfinite(value):
        data["alert"]["value"] = None
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode_event(body: bytes | str) -> tuple[AlertEvent, str]:
    """The event and site of a body made by :func:`encode_event`."""
    data = json.loads(body)
    if data.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} body: schema={data.get('schema')!r}")
    a = data["alert"]
    alert = Alert(
        alert_id=a["alert_id"],
        key=a["key"],
        rule=a["rule"],
        node_id=a["node_id"],
        severity=Severity[a["severity"].upper()],
        state=AlertState(a["state"]),
        message=a["message"],
        value=a["value"],
        raised_at_ms=a["raised_at_ms"],
        acked_at_ms=a["acked_at_ms"],
        acked_by=a["acked_by"],
        ack_comment=a["ack_comment"],
        cleared_at_ms=a["cleared_at_ms"],
        escalations=a["escalations"],
    )
    event = AlertEvent(
        event_id=data["event_id"],
        kind=AlertEventKind(data["kind"]),
        at_ms=data["at_ms"],
        alert=alert,
    )
    return event, data["site"]


def script_env(event: AlertEvent, site: str) -> dict[str, str]:
    """The FIELDGATE_* variables a script hook gets for ``event``."""
    alert = event.alert
    return {
        "FIELDGATE_SITE": site,
        "FIELDGATE_EVENT_ID": event.event_id,
        "FIELDGATE_EVENT_KIND": event.kind.value,
        "FIELDGATE_EVENT_AT_MS": str(event.at_ms),
        "FIELDGATE_ALERT_ID": alert.alert_id,
        "FIELDGATE_RULE": alert.rule,
        "FIELDGATE_NODE_ID": alert.node_id,
        "FIELDGATE_SEVERITY": alert.severity.name.lower(),
        "FIELDGATE_STATE": alert.state.value,
        "FIELDGATE_MESSAGE": alert.message.replace("\0", ""),  # env values cannot hold NUL
        "FIELDGATE_VALUE": "" if alert.value is None else repr(alert.value),
    }
