"""Downlinks: which link a node's command goes out on (no transport involved here)."""

from __future__ import annotations

import logging

import pytest

from gateway.downlink import Downlinks
from gateway.protocol.messages import Command, CommandKind


class Link:
    """A link that records what it was given; ``full`` makes it refuse, as a full queue does."""

    def __init__(self, name: str, *, full: bool = False) -> None:
        self.name = name
        self.full = full
        self.sent: list[Command] = []

    def send_command(self, command: Command) -> bool:
        if self.full:
            return False
        self.sent.append(command)
        return True


def cmd(node: str, cmd_id: int = 1) -> Command:
    return Command(node, cmd_id, CommandKind.ACTUATE, (("output", "valve"), ("state", True)))


def test_a_command_goes_to_the_link_registered_last_for_its_node() -> None:
    downlinks = Downlinks()
    serial, ble = Link("serial"), Link("ble")
    downlinks.register("n1", serial)
    downlinks.register("n1", ble)  # the node moved to BLE
    assert downlinks.send_command(cmd("n1"))
    assert (serial.sent, ble.sent) == ([], [cmd("n1")])
    assert downlinks.nodes() == {"n1": "ble"}
    assert downlinks.sent == {"n1": 1}


def test_withdrawing_an_old_link_keeps_the_newer_one() -> None:
    downlinks = Downlinks()
    old, new = Link("old"), Link("new")
    downlinks.register("n1", old)
    downlinks.register("n1", new)
    downlinks.unregister("n1", old)
    assert downlinks.link_for("n1") is new
    downlinks.unregister("n1", new)
    assert downlinks.link_for("n1") is None


def test_a_link_that_goes_down_is_withdrawn_for_all_its_nodes() -> None:
    downlinks = Downlinks()
    broker, port = Link("mqtt"), Link("serial")
    for node in ("a", "b"):
        downlinks.register(node, broker)
    downlinks.register("c", port)
    downlinks.unregister_link(broker)
    assert downlinks.nodes() == {"c": "serial"}


def test_no_live_link_or_a_full_one_returns_false_logs_and_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    downlinks = Downlinks()
    downlinks.register("busy", Link("ble", full=True))
    with caplog.at_level(logging.WARNING, logger="gateway.downlink"):
        assert not downlinks.send_command(cmd("ghost"))
        assert not downlinks.send_command(cmd("busy", 7))
    assert downlinks.failed == {"ghost": 1, "busy": 1}
    assert downlinks.sent == {}
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["ghost", "busy"]
    assert "no live link" in caplog.records[0].getMessage()
