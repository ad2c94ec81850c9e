"""What every source adapter shares: coalesced acks, admission, receive time."""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.errors import CodecError
from gateway.identity.gate import NodeGate
from gateway.log_limit import LimitedWarning
from gateway.metrics import Metrics
from gateway.protocol.messages import Ack, Command, Transport, UplinkMessage
from gateway.protocol.payload import decode_message

_LOGGER = logging.getLogger(__name__)
_MAX_LOGGED_ONCE = 1000


def now_ms() -> int:
    """Gateway wall time in ms; adapters stamp receive time with it (codecs never read clocks)."""
    return time.time_ns() // 1_000_000


class AckMailbox:
    """Acks waiting to go back to nodes on one link, newest per node only.

    Acks are cumulative, so when a link is slow an older pending ack is simply
    replaced: the mailbox is bounded by the number of nodes on the link.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], Ack] = {}
        self._event = asyncio.Event()

    def send_ack(self, ack: Ack) -> None:
        self._pending[(ack.node_id, ack.boot_id)] = ack
        self._event.set()

    async def take(self) -> list[Ack]:
        await self._event.wait()
        self._event.clear()
        acks = list(self._pending.values())
        self._pending.clear()
        return acks


class CommandOutbox:
    """Commands waiting for one link's writer task (the Downlinks router's way in).

    Bounded: a full outbox refuses, so the router can say the command was not taken.
    Commands still waiting when the link goes down are dropped and logged: the router
    already said they were taken, and they must not reach whatever connects next.
    """

    def __init__(self, link: str, size: int) -> None:
        self._link = link
        self._queue: asyncio.Queue[Command] = asyncio.Queue(size)

    def offer(self, command: Command) -> bool:
        try:
            self._queue.put_nowait(command)
        except asyncio.QueueFull:
            return False
        return True

    async def get(self) -> Command:
        return await self._queue.get()

    def drop_all(self) -> None:
        while not self._queue.empty():
            command = self._queue.get_nowait()
            _LOGGER.warning(
                "%s: command %d lost with the %s link", command.node_id, command.cmd_id, self._link
            )


class Admission:
    """Counts and logs bad input; decides whether a decoded message may enter the journal."""

    def __init__(
        self,
        transport: Transport,
        metrics: Metrics,
        allowed: frozenset[str],
        gate: NodeGate | None = None,
    ) -> None:
        self.transport = transport
        self._metrics = metrics
        self._allowed = allowed
        # Shared by all sources: pins, the registry cap and new-node admission (None: off).
        self._gate = gate
        # What was logged once; bounded, so made-up node ids cannot grow it: past the cap
        # the rest are logged at most once per interval with a count.
        self._logged: set[tuple[str, str]] = set()
        self._overflow_log = LimitedWarning(_LOGGER)

    def malformed(self, where: str, error: CodecError) -> None:
        reason = type(error).__name__
        self._metrics.malformed_input(self.transport.value, reason)
        # One log line per (where, reason) kind, not per frame: counters carry the volume.
        if self._first_time((where, reason)):
            _LOGGER.warning("%s: %s rejected: %s", where, self.transport.value, error)
        elif (where, reason) not in self._logged:
            self._overflow_log.warning("%s: %s rejected: %s", where, self.transport.value, error)

    def accept_frame(
        self, item: bytes | CodecError, where: str, channel: str
    ) -> UplinkMessage | None:
        """Decode one frame (or count its framing error); the uplink message if it may enter
        (``channel``: where it came from, as pins name it, e.g. ``serial:/dev/ttyACM0``)."""
        if isinstance(item, CodecError):
            self.malformed(where, item)
            return None
        try:
            msg = decode_message(item)
        except CodecError as exc:
            self.malformed(where, exc)
            return None
        if isinstance(msg, Ack | Command):
            return None  # downlink kinds never come from a node
        return msg if self.admit(msg, where, channel) else None

    @property
    def remembered(self) -> int:
        """How many (source, reason) kinds are remembered as logged once (bounded)."""
        return len(self._logged)

    def _first_time(self, key: tuple[str, str]) -> bool:
        """True (and remembered) the first time ``key`` is seen, while under the cap."""
        if key in self._logged or len(self._logged) >= _MAX_LOGGED_ONCE:
            return False
        self._logged.add(key)
        return True

    def admit(self, msg: UplinkMessage, where: str, channel: str) -> bool:
        if not self._allowed or msg.node_id in self._allowed:
            return self._gate is None or self._gate.admit(msg.node_id, channel)
        self._metrics.rejected_nodes[(self.transport.value, msg.node_id)] += 1
        key = (msg.node_id, "unknown")
        if self._first_time(key):
            _LOGGER.warning(
                "%s: unknown node on %s (%s); add it to allowed_nodes to accept it",
                msg.node_id,
                self.transport.value,
                where,
            )
        elif key not in self._logged:
            self._overflow_log.warning(
                "%s: unknown node on %s (%s)", msg.node_id, self.transport.value, where
            )
        return False
