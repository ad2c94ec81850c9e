"""The in-process alert event stream: one publisher, any number of bounded subscribers.

The dashboard and the terminal live view subscribe; a slow subscriber never slows the
alert path. Each subscriber has its own bounded queue; when it is full the OLDEST event
is dropped (the newest state matters most to a live view), counted, and the subscriber
sees a :class:`Gap` marker where events are missing, before the events that follow.
Use from the event loop's thread only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from gateway.events import AlertEvent

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Gap:
    """``dropped`` events were lost to this subscriber here (its queue overflowed)."""

    dropped: int


BusItem = AlertEvent | Gap


class Subscription:
    """An async iterator of :data:`BusItem`; ends when closed or when the bus closes.

    Use as ``async with bus.subscribe(100) as sub: async for item in sub: ...`` so it is
    removed from the bus when the consumer goes away.
    """

    def __init__(self, bus: AlertBus, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self._bus = bus
        self._queue: deque[AlertEvent] = deque(maxlen=maxlen)
        self._unreported_drops = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        self.maxlen = maxlen
        self.dropped = 0  # total over the subscription's life

    def _push(self, event: AlertEvent) -> None:
        if self._closed:
            return
        if len(self._queue) == self.maxlen:
            self.dropped += 1
            self._unreported_drops += 1
        self._queue.append(event)  # deque(maxlen) drops the oldest
        self._wakeup.set()

    def pending(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        """Stop receiving; the iterator ends after what is already queued."""
        if not self._closed:
            self._closed = True
            self._bus._remove(self)  # noqa: SLF001 - Subscription and AlertBus are one unit split in two classes of this module
            self._wakeup.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> BusItem:
        while True:
            if self._unreported_drops:
                gap = Gap(self._unreported_drops)
                self._unreported_drops = 0
                return gap
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AlertBus:
    """Fan-out of alert events to subscribers; :meth:`publish` never blocks."""

    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []
        self._closed = False
        self.published = 0

    def publish(self, event: AlertEvent) -> None:
        self.published += 1
        for sub in self._subscribers:
            sub._push(event)  # noqa: SLF001 - Subscription and AlertBus are one unit split in two classes of this module

    def subscribe(self, maxlen: int = 1000) -> Subscription:
        """A new subscription that sees every event published from now on."""
        sub = Subscription(self, maxlen)
        if self._closed:
            sub.close()
        else:
            self._subscribers.append(sub)
        return sub

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def dropped(self) -> int:
        """Events dropped across the current subscribers."""
        return sum(sub.dropped for sub in self._subscribers)

    def close(self) -> None:
        """End every subscription (shutdown); later subscriptions end at once."""
        self._closed = True
        for sub in list(self._subscribers):
            sub.close()

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
