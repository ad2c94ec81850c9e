"""CommandOutbox: bounded, in order, and what a dropped link still held is logged, not sent."""

from __future__ import annotations

import asyncio

import pytest

from gateway.protocol.messages import Command, CommandKind
from gateway.sources.common import CommandOutbox


def command(cmd_id: int) -> Command:
    return Command("pump-01", cmd_id, CommandKind.REBOOT, ())


def test_commands_leave_in_order_and_a_full_outbox_refuses() -> None:
    async def scenario() -> list[int]:
        outbox = CommandOutbox("serial /dev/x", size=2)
        assert outbox.offer(command(1))
        assert outbox.offer(command(2))
        assert not outbox.offer(command(3))
        return [(await outbox.get()).cmd_id for _ in range(2)]

    assert asyncio.run(scenario()) == [1, 2]


def test_commands_left_when_the_link_drops_are_logged_and_never_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> bool:
        outbox = CommandOutbox("broker", size=4)
        outbox.offer(command(7))
        outbox.drop_all()
        outbox.offer(command(8))
        return (await outbox.get()).cmd_id == 8

    assert asyncio.run(scenario())
    assert "pump-01: command 7 lost with the broker link" in caplog.text
