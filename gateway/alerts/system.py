"""Alerts about the gateway itself (its disk, its uplink), raised without the alert engine.

Node alerts go through the rule engine and its durable history. A gateway condition such as
"the journal's disk is full" cannot: the history lives on that disk. These alerts go straight
to the outputs that need no disk (the in-process stream behind the live view and the
dashboard, local MQTT, the script hook) as ordinary :class:`AlertEvent` s, raised once and
cleared once per episode.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from gateway.events import Alert, AlertEvent, AlertEventKind, AlertState, Severity

_LOGGER = logging.getLogger(__name__)
GATEWAY_NODE = "gateway"


class SystemAlert:
    """One gateway condition (``rule``): ``raise_`` while it holds, ``clear`` when it ends."""

    def __init__(
        self,
        rule: str,
        sink: Callable[[AlertEvent], None],
        severity: Severity = Severity.CRITICAL,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.rule = rule
        self._sink = sink
        self._severity = severity
        self._clock_ms = clock_ms
        self.current: Alert | None = None

    def raise_(self, message: str, value: float | None = None) -> None:
        if self.current is not None:
            return
        now = self._clock_ms()
        self.current = Alert(
            alert_id=f"{self.rule}:{GATEWAY_NODE}:{now}",
            key=f"{self.rule}:{GATEWAY_NODE}",
            rule=self.rule,
            node_id=GATEWAY_NODE,
            severity=self._severity,
            state=AlertState.RAISED,
            message=message,
            value=value,
            raised_at_ms=now,
        )
        self._sink(
            AlertEvent(f"{self.current.alert_id}:raised", AlertEventKind.RAISED, now, self.current)
        )

    def clear(self) -> None:
        alert = self.current
        if alert is None:
            return
        now = self._clock_ms()
        cleared = dataclasses.replace(alert, state=AlertState.CLEARED, cleared_at_ms=now)
        self.current = None
        self._sink(AlertEvent(f"{alert.alert_id}:cleared", AlertEventKind.CLEARED, now, cleared))
