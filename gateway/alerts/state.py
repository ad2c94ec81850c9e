"""Pure alert logic: condition detectors and the per-alert state machine.

No I/O and no clock: every call is given its time in gateway wall-clock ms.

Detectors turn observations into a debounced yes/no per (rule, node):

* :class:`LevelDetector` — a Schmitt trigger (hysteresis) followed by a minimum duration.
  The condition *holds* from the first sample at or past the threshold until a sample is back
  past it by more than the hysteresis; it becomes *active* once it has held for
  ``min_duration_ms``. A sample stands until the next one (sample and hold), so a pending
  condition can become active on a clock tick with no new sample.
* :class:`WindowCounter` — a sum over a sliding time window (lost messages, disagreements).
* :class:`SilenceDetector` — no observation for a while.

:class:`AlertBook` is the state machine over alerts, one open alert per key (rule + node)::

    (none) --raise--> RAISED --acknowledge--> ACKNOWLEDGED --clear--> CLEARED
                        |  \\--------------------------------clear--> CLEARED
                        +-- renotify / escalate (only while RAISED, i.e. unacknowledged)

A raise while an alert of that key is open is a duplicate and yields nothing.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from gateway.errors import FieldgateError
from gateway.events import Alert, AlertEvent, AlertEventKind, AlertState, Severity


class AlertError(FieldgateError):
    """An operation on an alert that its state does not allow (unknown, cleared, already acked)."""

    def __init__(self, alert_id: str, reason: str) -> None:
        super().__init__(f"alert {alert_id}: {reason}")
        self.alert_id = alert_id
        self.reason = reason


# -- detectors --------------------------------------------------------------------------------


@dataclass(slots=True)
class LevelDetector:
    """Hysteresis then minimum duration over a stream of values.

    ``above``: holds while ``value >= on`` and then while ``value >= off`` (``off = on - h``);
    otherwise mirrored (``value <= on``, then ``value <= off`` with ``off = on + h``).
    ``update``/``poll`` return True when the detector becomes active, False when it stops
    being active, None when nothing changed.
    """

    on: float
    off: float
    above: bool
    min_duration_ms: int
    holding: bool = False
    since_ms: int = 0
    active: bool = False
    last_value: float | None = None
    # The most extreme value since the condition began to hold: what an alert reports, since
    # it was compared with ``on`` (the last value may sit inside the hysteresis band).
    peak: float | None = None
    # What was known about the peak's sample (e.g. the channels behind an anomaly score).
    peak_note: str = ""

    def update(self, t_ms: int, value: float, note: str = "") -> bool | None:
        self.last_value = value
        level = self.off if self.holding else self.on
        holds = value >= level if self.above else value <= level
        if holds:
            if not self.holding:
                self.holding = True
                self.since_ms = t_ms
                self.peak, self.peak_note = value, note
            elif self.peak is None or (value > self.peak if self.above else value < self.peak):
                self.peak, self.peak_note = value, note
            return self.poll(t_ms)
        self.holding = False
        if self.active:
            self.active = False
            return False
        return None

    def poll(self, now_ms: int) -> bool | None:
        if self.holding and not self.active and now_ms - self.since_ms >= self.min_duration_ms:
            self.active = True
            return True
        return None

    @property
    def reported(self) -> float | None:
        """The value an alert shows: the peak that crossed ``on``, else the last value."""
        return self.peak if self.peak is not None else self.last_value

    @property
    def pending(self) -> bool:
        """Holding but not yet for the minimum duration: a tick may activate it."""
        return self.holding and not self.active

    def restore(self, since_ms: int) -> None:
        """Assume the condition of a reloaded open alert still holds until a sample says not."""
        self.holding = self.active = True
        self.peak = None
        self.since_ms = since_ms


@dataclass(slots=True)
class WindowCounter:
    """Active while the sum of amounts in the last ``window_ms`` is at least ``threshold``."""

    threshold: int
    window_ms: int
    entries: deque[tuple[int, int]] = dataclasses.field(default_factory=deque)
    total: int = 0
    active: bool = False
    # After a restart the window's history is gone; a reloaded open alert is held for one
    # full window before it may clear, rather than clearing on the first tick.
    hold_until_ms: int | None = None
    restored: bool = False

    def add(self, t_ms: int, amount: int) -> bool | None:
        self.entries.append((t_ms, amount))
        self.total += amount
        return self.poll(t_ms)

    def poll(self, now_ms: int) -> bool | None:
        horizon = now_ms - self.window_ms
        entries = self.entries
        while entries and entries[0][0] <= horizon:
            self.total -= entries.popleft()[1]
        if self.total >= self.threshold:
            self.restored = False
            if not self.active:
                self.active = True
                return True
            return None
        if self.active:
            if self.restored:
                if self.hold_until_ms is None:
                    self.hold_until_ms = now_ms + self.window_ms
                if now_ms < self.hold_until_ms:
                    return None
                self.restored = False
            self.active = False
            return False
        return None

    @property
    def idle(self) -> bool:
        """Nothing to expire and nothing active: ticks need not poll it."""
        return not self.entries and not self.active

    def restore(self) -> None:
        self.active = self.restored = True
        self.hold_until_ms = None


@dataclass(slots=True)
class SilenceDetector:
    """Active once ``after_ms`` passed without an observation; cleared by the next one."""

    after_ms: int
    last_seen_ms: int | None = None
    active: bool = False

    def seen(self, t_ms: int) -> bool | None:
        if self.last_seen_ms is None or t_ms > self.last_seen_ms:
            self.last_seen_ms = t_ms
        if self.active:
            self.active = False
            return False
        return None

    def poll(self, now_ms: int) -> bool | None:
        if (
            not self.active
            and self.last_seen_ms is not None
            and now_ms - self.last_seen_ms >= self.after_ms
        ):
            self.active = True
            return True
        return None

    def restore(self) -> None:
        self.active = True


# -- the alert state machine -----------------------------------------------------------------


@dataclass(slots=True)
class OpenAlert:
    """An open alert with the timers the state machine keeps for it."""

    alert: Alert
    number: int  # the n in "<rule>:<node>:<n>"
    renotified: int = 0
    notified_ms: int = 0  # last raise, re-notification or escalation: re-notify timer base
    escalated_ms: int = 0  # raise or last escalation: escalation timer base


@dataclass(frozen=True, slots=True)
class Timing:
    """Per-alert timer settings; 0 disables re-notification / escalation."""

    renotify_ms: int
    escalate_ms: int
    max_escalations: int


def alert_key(rule: str, node_id: str) -> str:
    return f"{rule}:{node_id}"


def event_id(alert_id: str, kind: AlertEventKind, count: int) -> str:
    """Deterministic: the same history produces the same ids, so resends are recognisable."""
    return f"{alert_id}:{kind.value}:{count}"


class AlertBook:
    """The open alerts, one per key, and the transitions between their states."""

    def __init__(
        self, open_alerts: Iterable[OpenAlert] = (), numbers: dict[str, int] | None = None
    ) -> None:
        self._open: dict[str, OpenAlert] = {}
        self._by_id: dict[str, OpenAlert] = {}
        # Highest alert number used per key (open or cleared): ids never repeat.
        self._numbers: dict[str, int] = dict(numbers or {})
        for rec in open_alerts:
            self._open[rec.alert.key] = rec
            self._by_id[rec.alert.alert_id] = rec
            self._numbers[rec.alert.key] = max(self._numbers.get(rec.alert.key, 0), rec.number)

    def __iter__(self) -> Iterator[OpenAlert]:
        return iter(list(self._open.values()))

    def __len__(self) -> int:
        return len(self._open)

    def get(self, key: str) -> OpenAlert | None:
        return self._open.get(key)

    def by_id(self, alert_id: str) -> OpenAlert | None:
        return self._by_id.get(alert_id)

    def raise_alert(
        self,
        rule: str,
        node_id: str,
        *,
        severity: Severity,
        message: str,
        value: float | None,
        at_ms: int,
    ) -> AlertEvent | None:
        """RAISED, or None when an alert of this key is already open (dedupe)."""
        key = alert_key(rule, node_id)
        if key in self._open:
            return None
        number = self._numbers.get(key, 0) + 1
        self._numbers[key] = number
        alert = Alert(
            alert_id=f"{key}:{number}",
            key=key,
            rule=rule,
            node_id=node_id,
            severity=severity,
            state=AlertState.RAISED,
            message=message,
            value=value,
            raised_at_ms=at_ms,
        )
        rec = OpenAlert(alert, number, notified_ms=at_ms, escalated_ms=at_ms)
        self._open[key] = rec
        self._by_id[alert.alert_id] = rec
        return AlertEvent(event_id(alert.alert_id, AlertEventKind.RAISED, 1), AlertEventKind.RAISED, at_ms, alert)  # fmt: skip

    def acknowledge(self, alert_id: str, by: str, comment: str, at_ms: int) -> AlertEvent:
        rec = self._by_id.get(alert_id)
        if rec is None:
            raise AlertError(alert_id, "no open alert with this id (cleared or unknown)")
        if rec.alert.state is AlertState.ACKNOWLEDGED:
            raise AlertError(alert_id, f"already acknowledged by {rec.alert.acked_by}")
        rec.alert = dataclasses.replace(
            rec.alert,
            state=AlertState.ACKNOWLEDGED,
            acked_at_ms=at_ms,
            acked_by=by,
            ack_comment=comment,
        )
        kind = AlertEventKind.ACKNOWLEDGED
        return AlertEvent(event_id(alert_id, kind, 1), kind, at_ms, rec.alert)

    def clear(self, key: str, at_ms: int, message: str | None = None) -> AlertEvent | None:
        """CLEARED from RAISED or ACKNOWLEDGED; None when nothing of this key is open."""
        rec = self._open.pop(key, None)
        if rec is None:
            return None
        del self._by_id[rec.alert.alert_id]
        # An alert raised on a clock tick can be cleared by a sample stamped a little earlier
        # (a node's own time); it cannot end before it began.
        at_ms = max(at_ms, rec.alert.raised_at_ms)
        changes: dict[str, object] = {"state": AlertState.CLEARED, "cleared_at_ms": at_ms}
        if message is not None:
            changes["message"] = message
        alert = dataclasses.replace(rec.alert, **changes)  # type: ignore[arg-type]
        kind = AlertEventKind.CLEARED
        return AlertEvent(event_id(alert.alert_id, kind, 1), kind, at_ms, alert)

    def due(self, now_ms: int, timing: Callable[[Alert], Timing | None]) -> list[AlertEvent]:
        """Escalations and re-notifications of unacknowledged alerts whose time has come.

        ``timing`` returns None for an alert whose notifications are suppressed now (silence
        window); its timers keep running and fire on the first tick after the window.
        At most one event per alert per call, so a long pause does not cause a burst.
        """
        events: list[AlertEvent] = []
        for rec in self._open.values():
            alert = rec.alert
            if alert.state is not AlertState.RAISED:
                continue
            t = timing(alert)
            if t is None:
                continue
            if (
                t.escalate_ms
                and alert.escalations < t.max_escalations
                and now_ms - rec.escalated_ms >= t.escalate_ms
            ):
                rec.alert = dataclasses.replace(
                    alert,
                    severity=Severity(min(alert.severity + 1, Severity.CRITICAL)),
                    escalations=alert.escalations + 1,
                )
                rec.escalated_ms = rec.notified_ms = now_ms
                kind = AlertEventKind.ESCALATED
                eid = event_id(alert.alert_id, kind, rec.alert.escalations)
                events.append(AlertEvent(eid, kind, now_ms, rec.alert))
            elif t.renotify_ms and now_ms - rec.notified_ms >= t.renotify_ms:
                rec.renotified += 1
                rec.notified_ms = now_ms
                kind = AlertEventKind.RENOTIFIED
                eid = event_id(alert.alert_id, kind, rec.renotified)
                events.append(AlertEvent(eid, kind, now_ms, alert))
        return events
