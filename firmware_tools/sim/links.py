"""What every simulated transport shares: the link protocol, its counters, its queue.

A link carries uplink messages from one node out (serial frames, MQTT publishes,
BLE notifications) and hands downlink messages back through a callback. It never
holds data the node needs: the node's own unacknowledged buffer is what makes
delivery reliable, so a link's outgoing queue is small and, when full, drops its
oldest message (counted), as a UART FIFO or a radio queue would.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Protocol

from gateway.protocol.messages import DownlinkMessage, UplinkMessage

DownlinkHandler = Callable[[DownlinkMessage], None]


@dataclass(slots=True)
class LinkStats:
    messages_out: int = 0
    bytes_out: int = 0
    dropped: int = 0  # outgoing messages lost to a full queue or a dead connection
    messages_in: int = 0
    bad_in: int = 0  # downlink frames or payloads that did not decode
    connects: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Link(Protocol):
    """A node's transport. ``run`` works until cancelled; ``offer`` never blocks."""

    kind: str
    stats: LinkStats
    ready: asyncio.Event

    @property
    def address(self) -> str:
        """Where the gateway finds this node (a tty path, a topic prefix, a BLE address)."""

    def offer(self, msg: UplinkMessage) -> None: ...

    async def run(self, on_downlink: DownlinkHandler) -> None: ...


class Outbox:
    """A bounded FIFO of uplink messages; when full the oldest is dropped and counted."""

    def __init__(self, stats: LinkStats, maxlen: int = 256) -> None:
        self._items: deque[UplinkMessage] = deque()
        self._maxlen = maxlen
        self._stats = stats
        self._nonempty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, msg: UplinkMessage) -> None:
        if len(self._items) >= self._maxlen:
            self._items.popleft()
            self._stats.dropped += 1
        self._items.append(msg)
        self._nonempty.set()

    async def get(self) -> UplinkMessage:
        while not self._items:
            self._nonempty.clear()
            await self._nonempty.wait()
        return self._items.popleft()

    def push_front(self, msg: UplinkMessage) -> None:
        """Put back a message that could not be sent (it goes first next time)."""
        self._items.appendleft(msg)
        self._nonempty.set()
