"""The operator alert of the forwarder: the store refuses the gateway's token (401/403).

It goes through the gateway's own alert outputs like any alert (event stream, local MQTT,
script hook, webhook...), since the one channel known not to work is the store; raised and
cleared as a :class:`gateway.alerts.system.SystemAlert`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.alerts.system import SystemAlert
from gateway.events import Alert, AlertEvent

_LOGGER = logging.getLogger(__name__)
RULE = "forward_auth"


def auth_refused_message(url: str, status: int | None, reason: str) -> str:
    """What the operator reads; never carries the token."""
    return (
        f"the time-series store {url} refuses the gateway's token (HTTP {status}:"
        f" {reason[:200]}); nothing is sent or lost until forward.token or"
        " forward.token_file is fixed"
    )


class AuthAlert:
    """Raised once while the store refuses the token, cleared when it accepts it again."""

    def __init__(self, sink: Callable[[AlertEvent], None], clock_ms: Callable[[], int]) -> None:
        self._alert = SystemAlert(RULE, sink, clock_ms=clock_ms)

    @property
    def current(self) -> Alert | None:
        return self._alert.current

    def refused(self, url: str, status: int | None, reason: str) -> None:
        if self._alert.current is None:
            message = auth_refused_message(url, status, reason)
            _LOGGER.error("forward: %s", message)
            self._alert.raise_(message, value=float(status or 0))

    def accepted(self) -> None:
        if self._alert.current is not None:
            _LOGGER.warning("forward: the store accepts the token again")
            self._alert.clear()
