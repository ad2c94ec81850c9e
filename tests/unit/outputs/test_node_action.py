"""Node actions: matching events become Commands with stable, unique cmd_ids."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.events import AlertEventKind, Severity
from gateway.outputs.config import NodeActionsConfig
from gateway.outputs.node_action import NodeActions, command_id, commands_for
from gateway.protocol.messages import CommandKind
from tests.fixtures.gateway import wait_until
from tests.unit.outputs.helpers import RecordingSender, make_event

STOP_MOTOR: dict[str, object] = {
    "rule": "vibration_high",
    "command": "actuate",
    "args": {"output": "motor", "state": False},
}
BUZZER: dict[str, object] = {
    "min_severity": "critical",
    "node_id": "siren-1",
    "command": "actuate",
    "args": {"output": "buzzer", "state": True},
}


def _config(*actions: dict[str, object], **kw: object) -> NodeActionsConfig:
    return NodeActionsConfig.model_validate({"actions": list(actions), **kw})


def test_rule_action_stops_the_alerting_nodes_motor() -> None:
    (cmd,) = commands_for(_config(STOP_MOTOR), make_event(1, node_id="pump-03"))
    assert cmd.node_id == "pump-03"
    assert cmd.kind is CommandKind.ACTUATE
    assert cmd.args == (("output", "motor"), ("state", False))


def test_severity_action_sounds_a_fixed_buzzer_node() -> None:
    cfg = _config(BUZZER)
    (cmd,) = commands_for(cfg, make_event(1, rule="any_rule", severity=Severity.CRITICAL))
    assert cmd.node_id == "siren-1"
    assert commands_for(cfg, make_event(1, severity=Severity.WARNING)) == []


def test_clearing_and_acknowledging_trigger_nothing_by_default() -> None:
    cfg = _config(STOP_MOTOR, BUZZER)
    assert commands_for(cfg, make_event(1, kind=AlertEventKind.CLEARED)) == []
    assert commands_for(cfg, make_event(1, kind=AlertEventKind.ACKNOWLEDGED)) == []
    assert len(commands_for(cfg, make_event(1, kind=AlertEventKind.ESCALATED))) == 2


def test_cmd_ids_are_stable_per_event_and_distinct_across_events_and_actions() -> None:
    cfg = _config(STOP_MOTOR, BUZZER)
    first = commands_for(cfg, make_event(1))
    assert first == commands_for(cfg, make_event(1))  # a replay: the node ignores it
    ids = {c.cmd_id for n in range(500) for c in commands_for(cfg, make_event(n))}
    assert len(ids) == 1000
    assert all(0 < i < 2**32 for i in ids)
    assert command_id("x", 0) != command_id("x", 1)


async def test_runner_calls_the_sender() -> None:
    sender = RecordingSender()
    actions = NodeActions(_config(STOP_MOTOR), sender)
    task = asyncio.create_task(actions.run(), name="test:node_actions")
    try:
        expected = actions.offer(make_event(1)) + actions.offer(make_event(2))
        await wait_until(lambda: actions.sent == 2, 5, "two commands sent")
        assert sender.calls == expected
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_unreachable_node_is_retried_with_the_same_cmd_id_then_given_up() -> None:
    sender = RecordingSender(links=set())
    actions = NodeActions(_config(STOP_MOTOR, max_attempts=3, retry_interval_s=0.05), sender)
    task = asyncio.create_task(actions.run(), name="test:node_actions")
    try:
        actions.offer(make_event(1))
        await wait_until(lambda: actions.failed == 1, 5, "gave up")
        assert len(sender.calls) == 3
        assert len({c.cmd_id for c in sender.calls}) == 1
        assert actions.sent == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_node_that_comes_back_gets_the_retried_command() -> None:
    sender = RecordingSender(links=set())
    actions = NodeActions(_config(STOP_MOTOR, max_attempts=50, retry_interval_s=0.05), sender)
    task = asyncio.create_task(actions.run(), name="test:node_actions")
    try:
        actions.offer(make_event(1))
        await wait_until(lambda: len(sender.calls) >= 2, 5, "a retry")
        assert sender.links is not None
        sender.links.add("pump-07")
        await wait_until(lambda: actions.sent == 1, 5, "sent after the link came back")
        assert actions.failed == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_sync_sender_works_too() -> None:
    class SyncSender:
        def __init__(self) -> None:
            self.n = 0

        def send_command(self, command: object) -> bool:
            self.n += 1
            return True

    sender = SyncSender()
    actions = NodeActions(_config(STOP_MOTOR), sender)
    task = asyncio.create_task(actions.run(), name="test:node_actions")
    try:
        actions.offer(make_event(1))
        await wait_until(lambda: actions.sent == 1, 5, "sent")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
