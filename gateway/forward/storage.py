"""The backlog's disk faults: degrade, alert once, retry with backoff, resume (issue 14).

A full disk or an I/O error under ``forward.db`` must not stop the gateway: the local path
(journal, alerting) has its own disk handling, and the forwarder only waits. Each place that
writes the backlog is a *site* (``summarise``, ``budgets``, ``checkpoint``, ``open``...);
a site's first storage fault logs once with the cause and raises the ``forward_storage``
system alert (outputs that need no disk); the site is retried with backoff; the alert clears
when every site has written again. Any other error is a bug and still propagates.

What waits meanwhile (see docs/forwarding.md): the summariser's unstored intervals are
rebuilt from the journal (its state is reloaded from the backlog, retention stays held at
the stored ``replay_from_id``), the pending events, alert events and scores are kept in
their bounded lists, and the drain holds a delivered batch until its checkpoint is written
(never sending the next, so nothing is sent twice).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from gateway.alerts.system import SystemAlert
from gateway.errors import StoreError
from gateway.events import AlertEvent
from gateway.retry import Backoff
from gateway.store.faults import is_storage_fault

_LOGGER = logging.getLogger(__name__)
RULE = "forward_storage"
T = TypeVar("T")


def rollback(db: sqlite3.Connection) -> None:
    """Undo a failed write without hiding its cause: on SQLITE_FULL or an I/O error SQLite
    may have rolled back already, and a second ROLLBACK raises "cannot rollback"."""
    if not db.in_transaction:
        return
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error as exc:  # the original exception is the one that matters
        _LOGGER.debug("forward backlog: rollback after a failed write: %s", exc)


def storage_cause(exc: BaseException) -> BaseException | None:
    """The SQLite storage fault behind ``exc`` (itself or a StoreError's cause), else None."""
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    return cause if cause is not None and is_storage_fault(cause) else None


class StorageFaults:
    """The backlog's open storage faults, by site, and the one alert that reports them."""

    def __init__(
        self,
        path: object,
        sink: Callable[[AlertEvent], None],
        clock_ms: Callable[[], int],
        *,
        retry_first_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        self._path = path
        self.alert = SystemAlert(RULE, sink, clock_ms=clock_ms)
        self._first, self._max = retry_first_s, retry_max_s
        self._open: dict[str, str] = {}  # site -> cause
        self._backoff: dict[str, Backoff] = {}
        self._next_try: dict[str, float] = {}
        self.episodes = 0  # fault episodes since start (metrics)

    @property
    def fault(self) -> str | None:
        """The first open fault's cause, None while the backlog writes."""
        return next(iter(self._open.values()), None)

    def is_open(self, site: str) -> bool:
        return site in self._open

    def due(self, site: str) -> bool:
        """False while ``site`` waits out its backoff after a fault."""
        return time.monotonic() >= self._next_try.get(site, 0.0)

    def failed(self, site: str, exc: BaseException) -> float | None:
        """Record a failure at ``site``: the seconds to wait before trying again, or None
        when ``exc`` is not a storage fault (a bug: the caller re-raises)."""
        cause = storage_cause(exc)
        if cause is None:
            return None
        if site not in self._open:
            _LOGGER.error(
                "forward: backlog %s cannot write (%s: %s); forwarding waits and retries, "
                "nothing acknowledged is lost (summaries are rebuilt from the journal)",
                self._path, site, cause,
            )  # fmt: skip
            if not self._open:
                self.episodes += 1
                self.alert.raise_(
                    f"the forwarding backlog {self._path} cannot write ({cause}): forwarding "
                    "to the central store is paused until the disk has room"
                )
            self._open[site] = str(cause)
        backoff = self._backoff.setdefault(site, Backoff(self._first, self._max))
        delay = backoff.next_delay()
        self._next_try[site] = time.monotonic() + delay
        return delay

    def ok(self, site: str) -> None:
        """``site`` wrote again: forget its fault; clear the alert when none is left."""
        if site not in self._open:
            return
        del self._open[site]
        self._backoff.pop(site, None)
        self._next_try.pop(site, None)
        _LOGGER.warning("forward: backlog %s writes again (%s); forwarding resumes",
                        self._path, site)  # fmt: skip
        if not self._open:
            self.alert.clear()

    async def attempt(self, site: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """``await call()`` once: None if the disk refused it (retry when :meth:`due`)."""
        try:
            result = await call()
        except (sqlite3.Error, StoreError) as exc:
            if self.failed(site, exc) is None:
                raise
            return None
        self.ok(site)
        return result

    async def durably(self, site: str, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` until it is not refused by the disk (other errors propagate)."""
        while True:
            try:
                result = await call()
            except (sqlite3.Error, StoreError) as exc:
                delay = self.failed(site, exc)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            self.ok(site)
            return result


def requeue(pending: deque[T], taken: Sequence[T], bound: int) -> int:
    """Put ``taken`` back in front of ``pending`` (it was not stored); past ``bound`` the
    oldest go. Returns how many went (the caller counts them as dropped)."""
    pending.extendleft(reversed(taken))
    excess = max(len(pending) - bound, 0)
    for _ in range(excess):
        pending.popleft()
    return excess


async def lock_backlog(path: Path) -> int:
    """One drainer per backlog (two would send every batch twice): the flock'd fd of
    ``<backlog>.lock``, once the other holder (the CLI, another gateway) lets go."""
    path = path.with_name(path.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if not told:
                _LOGGER.warning("forward: %s is being drained by another process; waiting", path)
                told = True
            await asyncio.sleep(1.0)
        except BaseException:
            os.close(fd)
            raise
