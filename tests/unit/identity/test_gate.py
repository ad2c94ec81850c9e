"""The node gate as an attacker meets it: pins learned on first contact and kept on disk,
a node's id from another channel refused and alerted, made-up ids bounded by the registry cap
and the admission rate (a test clock stands in for the minutes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.events import AlertEvent, AlertEventKind
from gateway.identity.config import NodesConfig
from gateway.identity.gate import ADMISSION_RATE, PIN_MISMATCH, REGISTRY_FULL, NodeGate
from gateway.identity.pins import PinStore, read_pins, unpin, write_pins

PORT_A = "serial:/dev/serial/by-id/usb-node-a"
PORT_B = "serial:/dev/serial/by-id/usb-node-b"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_gate(
    tmp_path: Path,
    events: list[AlertEvent] | None = None,
    clock: Clock | None = None,
    **config: Any,
) -> tuple[NodeGate, PinStore]:
    cfg = NodesConfig(**config)
    pins = PinStore(tmp_path / "node_pins.json", cfg.pins)
    pins.load(forget=cfg.unpin)
    sink = events.append if events is not None else None
    return NodeGate(cfg, pins, alert_sink=sink, clock=clock or Clock(), quiet_s=60), pins


def test_first_contact_pins_the_node_and_another_port_is_refused_and_alerted(
    tmp_path: Path,
) -> None:
    events: list[AlertEvent] = []
    gate, pins = make_gate(tmp_path, events)
    assert gate.admit("pump-01", PORT_A)
    assert pins.channel_of("pump-01") == PORT_A
    assert gate.admit("pump-01", PORT_A)

    assert not gate.admit("pump-01", PORT_B)  # the spoof
    assert not gate.admit("pump-01", "mqtt")  # nor over the broker
    assert gate.refused[PIN_MISMATCH] == 2
    (raised,) = events
    assert raised.kind is AlertEventKind.RAISED
    assert raised.alert.rule == "node_identity"
    assert "pump-01" in raised.alert.message
    assert PORT_B in raised.alert.message
    assert gate.admit("pump-01", PORT_A)  # the real node carries on


def test_a_mismatch_alert_clears_after_a_quiet_period(tmp_path: Path) -> None:
    events: list[AlertEvent] = []
    clock = Clock()
    gate, _ = make_gate(tmp_path, events, clock)
    gate.admit("pump-01", PORT_A)
    gate.admit("pump-01", PORT_B)
    clock.now += 30
    gate.clear_quiet_alerts()
    assert [e.kind for e in events] == [AlertEventKind.RAISED]
    clock.now += 31
    gate.clear_quiet_alerts()
    assert [e.kind for e in events] == [AlertEventKind.RAISED, AlertEventKind.CLEARED]


def test_learned_pins_survive_a_restart_and_unpin_releases_one(tmp_path: Path) -> None:
    gate, pins = make_gate(tmp_path)
    gate.admit("pump-01", PORT_A)
    gate.admit("pump-02", "ble:C0:FF:EE:00:00:02")
    pins.save(pins.snapshot())
    assert set(read_pins(tmp_path / "node_pins.json")) == {"pump-01", "pump-02"}

    restarted, _ = make_gate(tmp_path)
    assert not restarted.admit("pump-01", PORT_B)

    assert unpin(tmp_path / "node_pins.json", ["pump-01"]) == ["pump-01"]
    again, pins_again = make_gate(tmp_path)
    assert again.admit("pump-01", PORT_B)  # moved on purpose: pinned to the new port
    assert pins_again.channel_of("pump-01") == PORT_B
    assert pins_again.channel_of("pump-02") == "ble:C0:FF:EE:00:00:02"


def test_a_running_gateway_sees_an_unpin_made_on_the_command_line(tmp_path: Path) -> None:
    clock = Clock()
    gate, pins = make_gate(tmp_path, clock=clock)
    gate.admit("pump-01", PORT_A)
    gate.admit("pump-02", PORT_A)
    pins.save(pins.snapshot())
    pins.saved(pins.snapshot())
    unpin(pins.path, ["pump-01"])  # what `fieldgate nodes unpin pump-01` does
    clock.now += 2
    assert gate.admit("pump-01", PORT_B)
    assert pins.channel_of("pump-01") == PORT_B
    assert pins.channel_of("pump-02") == PORT_A


def test_configured_pins_and_unpin_at_start(tmp_path: Path) -> None:
    write_pins(tmp_path / "node_pins.json", {"old": {"channel": PORT_A, "since_ms": 1}})
    gate, pins = make_gate(
        tmp_path, pins={"valve-01": "ble:aa:bb:cc:dd:ee:ff"}, unpin=("old",), max_nodes=1
    )
    assert not gate.admit("valve-01", PORT_A)
    assert gate.admit("valve-01", "ble:AA:BB:CC:DD:EE:FF")  # trusted by config: not counted
    assert pins.channel_of("old") is None
    assert read_pins(tmp_path / "node_pins.json") == {}


def test_a_damaged_pins_file_is_set_aside_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "node_pins.json").write_text("{not json")
    gate, _ = make_gate(tmp_path)
    assert gate.admit("pump-01", PORT_A)
    assert (tmp_path / "node_pins.json.damaged").read_text() == "{not json"


def test_made_up_ids_are_bounded_by_the_rate_and_the_cap(tmp_path: Path) -> None:
    events: list[AlertEvent] = []
    clock = Clock()
    gate, pins = make_gate(tmp_path, events, clock, max_nodes=25, new_per_minute=10)
    gate.seed(["pump-01"])
    admitted = sum(gate.admit(f"fake-{i}", PORT_B) for i in range(50_000))
    assert admitted == 10  # one minute's worth at once
    assert gate.refused[ADMISSION_RATE] == 50_000 - 10
    assert gate.admit("pump-01", PORT_A)  # a known node is never rate-limited
    for _minute in range(10):
        clock.now += 60
        admitted += sum(gate.admit(f"fake-more-{_minute}-{i}", PORT_B) for i in range(1000))
    assert gate.admitted == 25 == admitted + 1
    assert gate.refused[REGISTRY_FULL] > 0
    assert [e.alert.rule for e in events] == ["node_registry_full"]
    assert len(pins) == 25  # pins only for admitted nodes


def test_pins_must_name_a_channel_kind() -> None:
    with pytest.raises(ValueError, match="serial:<path>"):
        NodesConfig(pins={"pump-01": "/dev/ttyACM0"})


def test_the_pins_file_is_plain_json(tmp_path: Path) -> None:
    gate, pins = make_gate(tmp_path)
    gate.admit("pump-01", PORT_A)
    pins.save(pins.snapshot())
    data = json.loads((tmp_path / "node_pins.json").read_text())
    assert data["format"] == 1
    assert data["pins"]["pump-01"]["channel"] == PORT_A
