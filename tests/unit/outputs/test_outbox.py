"""The durable outbox: in order, delivered rows never resent, restart resumes.

The destinations here are small in-test implementations of the Destination protocol
(an "online" flag instead of a server); tests/integration/outputs runs the real
webhook and e-mail destinations against real servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import TransportError
from gateway.events import AlertEvent, Severity
from gateway.outputs.outbox import DeliveryRejected, Notification, Outbox, OutboxStore, Pending
from gateway.outputs.payload import encode_event
from tests.fixtures.gateway import wait_until
from tests.unit.outputs.helpers import make_event


class Receiver:
    def __init__(self, name: str = "hook", *, online: bool = True) -> None:
        self.name = name
        self.online = online
        self.received: list[str] = []
        self.attempts = 0
        self.refuse: set[str] = set()
        self.min_severity = Severity.INFO

    def wants(self, event: AlertEvent) -> bool:
        return event.alert.severity >= self.min_severity

    async def send(self, note: Notification) -> None:
        self.attempts += 1
        if not self.online:
            raise TransportError("offline")
        if note.event_id in self.refuse:
            raise DeliveryRejected("HTTP 400")
        self.received.append(note.event_id)


@contextlib.asynccontextmanager
async def running(outbox: Outbox) -> AsyncIterator[Outbox]:
    task = asyncio.create_task(outbox.run(), name="test:outbox")
    try:
        await asyncio.wait_for(outbox.ready.wait(), 5)
        yield outbox
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _put(outbox: Outbox, *ns: int) -> list[str]:
    ids = []
    for n in ns:
        event = make_event(n)
        assert outbox.put(event, encode_event(event, "s"))
        ids.append(event.event_id)
    return ids


def _outbox(path: Path, *dests: Receiver) -> Outbox:
    return Outbox(path, list(dests), retry_first_s=0.02, retry_max_s=0.05)


def test_store_enqueue_is_idempotent_by_event_id(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path / "o.db")
    try:
        items = [Pending(f"e{i}", b"{}", ("a", "b")) for i in range(3)]
        assert store.enqueue(items) == 3
        assert store.enqueue(items) == 0  # a replay adds nothing
        assert store.counts() == {"a": {"pending": 3}, "b": {"pending": 3}}
        note = store.next_pending("a")
        assert note is not None
        assert note.event_id == "e0"
        store.mark_delivered("a", note.row)
        store.mark_delivered("a", note.row)
        note2 = store.next_pending("a")
        assert note2 is not None
        assert note2.event_id == "e1"
        assert store.delivered_event_ids("a") == ["e0"]
    finally:
        store.close()


def test_store_uses_wal_and_full_sync(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path / "o.db")
    store.close()
    db = sqlite3.connect(tmp_path / "o.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


async def test_events_are_delivered_once_each_in_order(tmp_path: Path) -> None:
    hook = Receiver()
    async with running(_outbox(tmp_path / "o.db", hook)) as outbox:
        ids = _put(outbox, *range(20))
        await wait_until(lambda: len(hook.received) == 20, 5, "20 deliveries")
        await asyncio.sleep(0.1)
        assert hook.received == ids
        assert outbox.store.counts() == {"hook": {"delivered": 20}}


async def test_offline_destination_queues_then_catches_up_in_order(tmp_path: Path) -> None:
    hook = Receiver(online=False)
    async with running(_outbox(tmp_path / "o.db", hook)) as outbox:
        ids = _put(outbox, *range(10))
        await wait_until(lambda: hook.attempts >= 3, 5, "retries while offline")
        assert hook.received == []
        assert outbox.online["hook"] is False
        hook.online = True
        await wait_until(lambda: len(hook.received) == 10, 5, "catch-up")
        assert hook.received == ids
        assert outbox.online["hook"] is True


async def test_restart_resumes_and_never_resends_what_was_delivered(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    hook = Receiver()
    async with running(_outbox(path, hook)) as outbox:
        first = _put(outbox, 0, 1, 2)
        await wait_until(lambda: len(hook.received) == 3, 5, "first three")
        hook.online = False
        later = _put(outbox, 3, 4, 5)
        await wait_until(lambda: hook.attempts >= 5, 5, "retries")
    # A new process: same file, receiver back online.
    hook.online = True
    async with running(_outbox(path, hook)) as outbox:
        await wait_until(lambda: len(hook.received) == 6, 5, "resumed")
        await asyncio.sleep(0.1)
    assert hook.received == first + later


async def test_shutdown_commits_events_the_outbox_accepted(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    hook = Receiver(online=False)
    outbox = _outbox(path, hook)
    async with running(outbox):
        ids = _put(outbox, *range(5))  # cancelled before the writer ran
    store = OutboxStore(path)
    try:
        assert store.counts() == {"hook": {"pending": 5}}
    finally:
        store.close()
    hook.online = True
    async with running(_outbox(path, hook)):
        await wait_until(lambda: len(hook.received) == 5, 5, "delivered after restart")
    assert hook.received == ids


async def test_refused_event_is_marked_rejected_and_the_queue_moves_on(tmp_path: Path) -> None:
    hook = Receiver()
    hook.refuse.add(make_event(1).event_id)
    async with running(_outbox(tmp_path / "o.db", hook)) as outbox:
        ids = _put(outbox, 0, 1, 2)
        await wait_until(lambda: len(hook.received) == 2, 5, "others delivered")
        assert hook.received == [ids[0], ids[2]]
        assert outbox.rejected["hook"] == 1
        await wait_until(
            lambda: outbox.store.counts()["hook"] == {"delivered": 2, "rejected": 1}, 5, "marks"
        )


async def test_each_destination_has_its_own_queue_and_filter(tmp_path: Path) -> None:
    fast, slow = Receiver("fast"), Receiver("slow", online=False)
    slow.min_severity = Severity.CRITICAL
    async with running(_outbox(tmp_path / "o.db", fast, slow)) as outbox:
        for n, sev in enumerate([Severity.WARNING, Severity.CRITICAL, Severity.INFO]):
            event = make_event(n, severity=sev)
            outbox.put(event, encode_event(event, "s"))
        await wait_until(lambda: len(fast.received) == 3, 5, "fast unaffected by slow")
        slow.online = True
        await wait_until(lambda: len(slow.received) == 1, 5, "slow gets critical only")
        assert slow.received == [make_event(1, severity=Severity.CRITICAL).event_id]


def test_put_with_no_interested_destination_is_refused(tmp_path: Path) -> None:
    hook = Receiver()
    hook.min_severity = Severity.CRITICAL
    outbox = _outbox(tmp_path / "o.db", hook)
    event = make_event(1, severity=Severity.INFO)
    assert outbox.put(event, b"{}") is False


async def test_store_is_unavailable_outside_run(tmp_path: Path) -> None:
    from gateway.errors import StoreError

    outbox = _outbox(tmp_path / "o.db", Receiver())
    with pytest.raises(StoreError):
        _ = outbox.store
