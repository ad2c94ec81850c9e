"""The operator alert of the forwarder: the store refuses the gateway's token (401/403).

It goes through the gateway's own alert outputs like any alert (event stream, local MQTT,
script hook, webhook...), since the one channel known not to work is the store; raised and
cleared as a :class:`gateway.alerts.system.SystemAlert`.
"""

from __future__ import annotations

RULE = "forward_auth"


def auth_refused_message(url: str, status: int | None, reason: str) -> str:
    """What the operator reads; never carries the token."""
    return (
        f"the time-series store {url} refuses the gateway's token (HTTP {status}:"
        f" {reason[:200]}); nothing is sent or lost until forward.token or"
        " forward.token_file is fixed"
    )
