"""What sources hand to the journal: envelopes on one bounded queue.

An :class:`Envelope` is a decoded uplink message plus what only the adapter knows
(transport, receive time, the link an ``Ack`` goes back on). Sources put envelopes
on the :class:`IngestQueue`; the journal writer commits them in groups and then
acknowledges (gateway.store.writer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Literal, NamedTuple, Protocol

from gateway.protocol.messages import Ack, Transport, UplinkMessage

_LOGGER = logging.getLogger(__name__)


class AckLink(Protocol):
    """The way back to a node. ``send_ack`` must not block: links coalesce acks
    (they are cumulative, only the newest matters) and send them from their own task."""

    def send_ack(self, ack: Ack) -> None: ...


class Envelope(NamedTuple):
    """One message on its way to the journal (a named tuple: one is built per message, and
    a frozen dataclass costs about three times as much to build)."""

    msg: UplinkMessage
    transport: Transport
    rx_ms: int  # gateway wall time at receipt, stamped by the adapter
    link: AckLink | None = None  # None: the node cannot be acknowledged (beacons)
    rssi_dbm: int | None = None
    # MQTT: called once the message is durable, to PUBACK it to the broker only then.
    on_durable: Callable[[], None] | None = None


class IngestQueue:
    """The one bounded queue between all sources and the journal.

    Overflow policy (config ``queue.overflow``):
    ``block`` makes ``put`` wait, so backpressure reaches the links and the nodes;
    ``drop_newest`` drops the incoming envelope and counts it. A dropped message was
    never acknowledged, so its node resends it: dropping costs bandwidth, not data.
    """

    def __init__(self, max_messages: int, overflow: Literal["block", "drop_newest"]) -> None:
        self._queue: asyncio.Queue[Envelope] = asyncio.Queue(max_messages)
        self._overflow = overflow
        self.dropped: Counter[str] = Counter()
        self.high_water = 0
        # time.monotonic() when an envelope went into the empty queue: no envelope waiting
        # now arrived before it (the journal writer's group commits count from it).
        self.since = 0.0

    async def put(self, envelope: Envelope) -> bool:
        """Queue ``envelope``; False if the overflow policy dropped it."""
        if self._queue.empty():
            self.since = time.monotonic()
        if self._overflow == "drop_newest":
            try:
                self._queue.put_nowait(envelope)
            except asyncio.QueueFull:
                self.dropped[envelope.transport.value] += 1
                return False
        else:
            await self._queue.put(envelope)
        self.high_water = max(self.high_water, self._queue.qsize())
        return True

    def try_put(self, envelope: Envelope) -> bool:
        """Queue ``envelope`` without waiting. False only when the queue is full and the policy
        is ``block``: the caller must keep it and ``put`` it later (in order). With
        ``drop_newest`` a full queue drops and counts it, and that counts as handled."""
        queue = self._queue
        if queue.empty():
            self.since = time.monotonic()
        try:
            queue.put_nowait(envelope)
        except asyncio.QueueFull:
            if self._overflow != "drop_newest":
                return False
            self.dropped[envelope.transport.value] += 1
            return True
        self.high_water = max(self.high_water, queue.qsize())
        return True

    async def get_batch(self, max_items: int) -> list[Envelope]:
        """Wait for at least one envelope, then take whatever else is ready, up to ``max_items``."""
        batch = [await self._queue.get()]
        while len(batch) < max_items:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    def drain_nowait(self, max_items: int) -> list[Envelope]:
        batch: list[Envelope] = []
        while len(batch) < max_items:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    def qsize(self) -> int:
        return self._queue.qsize()

    @property
    def maxsize(self) -> int:
        return self._queue.maxsize
