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
from collections.abc import Callable, Sequence
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

    ``urgent`` says which messages must not wait in a group-commit hold (:meth:`hold`): the
    gateway passes the alert rules' :class:`~gateway.alerts.urgency.ThresholdScreen`.
    """

    def __init__(
        self,
        max_messages: int,
        overflow: Literal["block", "drop_newest"],
        urgent: Callable[[UplinkMessage], bool] | None = None,
    ) -> None:
        self._queue: asyncio.Queue[Envelope] = asyncio.Queue(max_messages)
        self._overflow = overflow
        self._urgent = urgent
        self._hold: asyncio.Future[None] | None = None  # the writer's hold, while it lasts
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
        if self._hold is not None:
            self._end_hold_if_urgent(envelope)
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
        if self._hold is not None:
            self._end_hold_if_urgent(envelope)
        return True

    async def hold(self, seconds: float, taken: Sequence[Envelope]) -> None:
        """Wait ``seconds`` so that what arrives meanwhile joins ``taken`` in one commit; not
        at all when one of ``taken`` is urgent, and no longer once an urgent one arrives."""
        urgent = self._urgent
        if urgent is None:
            await asyncio.sleep(seconds)
            return
        if any(urgent(env.msg) for env in taken):
            return
        loop = asyncio.get_running_loop()
        hold = self._hold = loop.create_future()
        timer = loop.call_later(seconds, _end, hold)
        try:
            await hold
        finally:
            timer.cancel()
            self._hold = None

    def _end_hold_if_urgent(self, envelope: Envelope) -> None:
        hold, urgent = self._hold, self._urgent
        if hold is not None and urgent is not None and urgent(envelope.msg):
            _end(hold)

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


def _end(hold: asyncio.Future[None]) -> None:
    if not hold.done():
        hold.set_result(None)
