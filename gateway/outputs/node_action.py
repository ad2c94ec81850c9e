"""Node actions: configured alert events become Commands to nodes (stop a motor, sound a
buzzer), sent through the downlink router (gateway.downlink, any transport).

Each (event, action) pair gets a cmd_id derived from the event id, so a retry, or a
replay of the same event after a restart, carries the same cmd_id and the node ignores
the repeat (docs/protocol.md §3); different events get different ids. When the node has
no live link the command is retried a configured number of times, then dropped and
counted (a stale "stop motor" minutes later may be wrong; the alert itself stays).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import inspect
import logging
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.errors import FieldgateError
from gateway.events import AlertEvent
from gateway.outputs.config import NodeActionsConfig
from gateway.protocol.messages import Command

_LOGGER = logging.getLogger(__name__)


class CommandSender(Protocol):
    """What the downlink router offers: send ``command`` to its node over the link it was
    last seen on; False when the node has no live link. May be sync or async."""

    def send_command(self, command: Command) -> Awaitable[bool] | bool: ...


def command_id(event_id: str, action_index: int) -> int:
    """A u32 cmd_id (never 0), the same for the same event and action."""
    digest = hashlib.sha256(f"{event_id}\x00{action_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") or 1


def commands_for(config: NodeActionsConfig, event: AlertEvent) -> list[Command]:
    """The commands the configured actions ask for on ``event`` (pure)."""
    out = []
    for index, action in enumerate(config.actions):
        if not action.matches(event):
            continue
        out.append(
            Command(
                node_id=action.node_id or event.alert.node_id,
                cmd_id=command_id(event.event_id, index),
                kind=action.command_kind,
                args=tuple(action.args.items()),
            )
        )
    return out


@dataclass(order=True)
class _Retry:
    due: float
    seq: int
    command: Command = field(compare=False)
    attempt: int = field(compare=False)
    event_id: str = field(compare=False)


class NodeActions:
    def __init__(self, config: NodeActionsConfig, sender: CommandSender | None) -> None:
        self._config = config
        self._sender = sender
        self._queue: deque[tuple[Command, str]] = deque(maxlen=config.queue_max_commands)
        self._retries: list[_Retry] = []
        self._seq = 0
        self._wakeup = asyncio.Event()
        self.sent = 0
        self.failed = 0  # gave up after max_attempts
        self.dropped = 0  # queue overflow
        if config.actions and sender is None:
            _LOGGER.warning("node actions configured but no downlink router: they will not run")

    def offer(self, event: AlertEvent) -> list[Command]:
        """Queue the commands ``event`` triggers (never blocks); returns them."""
        commands = commands_for(self._config, event)
        for command in commands:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
                _LOGGER.warning("%s: node action queue full; dropped oldest", command.node_id)
            self._queue.append((command, event.event_id))
            self._wakeup.set()
        return commands

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._queue:
                command, event_id = self._queue.popleft()
                await self._attempt(command, 1, event_id)
            now = loop.time()
            while self._retries and self._retries[0].due <= now:
                retry = heapq.heappop(self._retries)
                await self._attempt(retry.command, retry.attempt, retry.event_id)
            if self._queue:
                continue
            self._wakeup.clear()
            timeout = self._retries[0].due - loop.time() if self._retries else None
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    async def _attempt(self, command: Command, attempt: int, event_id: str) -> None:
        ok = False
        if self._sender is not None:
            try:
                result = self._sender.send_command(command)
                ok = bool(await result) if inspect.isawaitable(result) else bool(result)
            except FieldgateError as exc:
                _LOGGER.warning(
                    "%s: command %d (%s) failed: %s",
                    command.node_id,
                    command.cmd_id,
                    command.kind.name,
                    exc,
                )
        if ok:
            self.sent += 1
            _LOGGER.info(
                "%s: sent %s cmd_id=%d for %s",
                command.node_id,
                command.kind.name,
                command.cmd_id,
                event_id,
            )
            return
        if attempt >= self._config.max_attempts or self._sender is None:
            self.failed += 1
            _LOGGER.error(
                "%s: gave up on %s cmd_id=%d for %s after %d attempts (no link to the node)",
                command.node_id,
                command.kind.name,
                command.cmd_id,
                event_id,
                attempt,
            )
            return
        self._seq += 1
        due = asyncio.get_running_loop().time() + self._config.retry_interval_s
        heapq.heappush(self._retries, _Retry(due, self._seq, command, attempt + 1, event_id))
