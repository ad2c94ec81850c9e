"""What a person does to alerts at run time (the dashboard's actions): clear an open alert,
and silence a node for a maintenance window decided now rather than in the config file."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.alerts.config import SilenceWindow, load_alerts_config
from gateway.alerts.engine import AlertEngine
from gateway.alerts.state import AlertError
from gateway.events import AlertEventKind, AlertState, ChannelReading

S = 1000
RULE = {"kind": "threshold", "channel": "flow", "below": 60.0, "hysteresis": 5.0}


def engine() -> AlertEngine:
    return AlertEngine(
        load_alerts_config({"use_default_rules": False, "rules": {"flow_low": RULE}})
    )


def flow(t_s: float, value: float, node: str = "pump-1") -> ChannelReading:
    return ChannelReading(node, int(t_s * S), "flow", value)


def window(node: str, start_s: float, end_s: float) -> SilenceWindow:
    def at(t_s: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t_s, dt.UTC)

    return SilenceWindow(nodes=(node,), start=at(start_s), end=at(end_s), reason="maria: seal")


def test_a_person_clears_an_open_alert_and_a_new_one_needs_the_condition_to_trip_again() -> None:
    eng = engine()
    (raised,) = eng.observe(flow(1, 4.0))
    cleared = eng.clear(raised.alert.alert_id, "maria", "valve reopened", 2 * S)
    assert cleared.kind is AlertEventKind.CLEARED
    assert cleared.alert.state is AlertState.CLEARED
    assert "cleared by maria: valve reopened" in cleared.alert.message
    assert eng.open_alerts() == []
    assert eng.observe(flow(3, 4.0)) == []  # still low: no new alert while it stays low
    assert eng.observe(flow(4, 120.0)) == []  # recovers (nothing open to clear)
    (again,) = eng.observe(flow(5, 4.0))
    assert again.kind is AlertEventKind.RAISED
    assert again.alert.alert_id != raised.alert.alert_id
    with pytest.raises(AlertError):
        eng.clear(raised.alert.alert_id, "maria", "", 6 * S)


def test_a_silence_added_at_run_time_holds_alerts_of_that_node_until_it_ends() -> None:
    eng = engine()
    eng.add_silence(window("pump-1", 0, 10))
    assert eng.observe(flow(1, 4.0)) == []  # silenced node
    (other,) = eng.observe(flow(1, 4.0, node="pump-2"))  # other nodes are not
    assert other.alert.node_id == "pump-2"
    assert eng.tick(5 * S) == []
    (late,) = [e for e in eng.tick(11 * S) if e.kind is AlertEventKind.RAISED]
    assert late.alert.node_id == "pump-1"  # still low after the window: raised now
