"""The operator alert of the forwarder: the store refuses the gateway's token (401/403).

It goes through the gateway's own alert outputs like any alert (event stream, local MQTT,
script hook, webhook...), since the one channel known not to work is the store.
"""

from __future__ import annotations

import dataclasses

from gateway.events import Alert, AlertEvent, AlertEventKind, AlertState, Severity

RULE = "forward_auth"


def auth_refused(url: str, status: int | None, reason: str, now_ms: int) -> AlertEvent:
    """A critical alert raised on node ``gateway``; never carries the token."""
    alert = Alert(
        alert_id=f"forward-auth-{now_ms}",
        key=f"{RULE}:gateway",
        rule=RULE,
        node_id="gateway",
        severity=Severity.CRITICAL,
        state=AlertState.RAISED,
        message=(
            f"the time-series store {url} refuses the gateway's token (HTTP {status}:"
            f" {reason[:200]}); nothing is sent or lost until forward.token or"
            " forward.token_file is fixed"
        ),
        value=float(status or 0),
        raised_at_ms=now_ms,
    )
    return AlertEvent(f"{alert.alert_id}:raised", AlertEventKind.RAISED, now_ms, alert)


def auth_accepted(raised: Alert, now_ms: int) -> AlertEvent:
    """The alert ``raised`` cleared: a write succeeded again."""
    cleared = dataclasses.replace(raised, state=AlertState.CLEARED, cleared_at_ms=now_ms)
    return AlertEvent(f"{raised.alert_id}:cleared", AlertEventKind.CLEARED, now_ms, cleared)
