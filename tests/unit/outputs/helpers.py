"""Alert events for output tests (the engine's real output type, built by hand)."""

from __future__ import annotations

from gateway.events import Alert, AlertEvent, AlertEventKind, AlertState, Severity
from gateway.protocol.messages import Command

_STATE = {
    AlertEventKind.RAISED: AlertState.RAISED,
    AlertEventKind.RENOTIFIED: AlertState.RAISED,
    AlertEventKind.ESCALATED: AlertState.RAISED,
    AlertEventKind.ACKNOWLEDGED: AlertState.ACKNOWLEDGED,
    AlertEventKind.CLEARED: AlertState.CLEARED,
}


def make_event(
    n: int,
    *,
    node_id: str = "pump-07",
    rule: str = "vibration_high",
    severity: Severity = Severity.CRITICAL,
    kind: AlertEventKind = AlertEventKind.RAISED,
    value: float | None = 7.5,
) -> AlertEvent:
    alert_id = f"{rule}:{node_id}:{n}"
    return AlertEvent(
        event_id=f"{alert_id}:{kind.value}:1",
        kind=kind,
        at_ms=1_700_000_000_000 + n,
        alert=Alert(
            alert_id=alert_id,
            key=f"{rule}:{node_id}",
            rule=rule,
            node_id=node_id,
            severity=severity,
            state=_STATE[kind],
            message=f"vib_rms {value} above 5.0 (#{n})",
            value=value,
            raised_at_ms=1_700_000_000_000 + n,
        ),
    )


class RecordingSender:
    """A CommandSender standing in for the downlink router (no node link exists here):
    records what it was asked to send; ``links`` says which nodes are reachable."""

    def __init__(self, links: set[str] | None = None) -> None:
        self.links = links
        self.calls: list[Command] = []

    async def send_command(self, command: Command) -> bool:
        self.calls.append(command)
        return self.links is None or command.node_id in self.links
