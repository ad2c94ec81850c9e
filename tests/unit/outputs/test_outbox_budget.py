"""The outbox's byte budget under an alert burst with the internet down: no alert is dropped
or makes room by dropping another; other kinds are refused and counted while it is full; the
operator hears it (on_full, the outbox_full system alert) and it clears once deliveries catch
up. The destination is the in-test Receiver of test_outbox (an "online" flag, no server)."""

from __future__ import annotations

from pathlib import Path

from gateway.events import AlertEventKind
from gateway.outputs.outbox import Outbox
from gateway.outputs.payload import encode_event
from tests.fixtures.gateway import wait_until
from tests.unit.outputs.helpers import make_event
from tests.unit.outputs.test_outbox import Receiver, running

BUDGET = 20_000


def put(outbox: Outbox, n: int, kind: AlertEventKind = AlertEventKind.RAISED) -> tuple[str, bool]:
    event = make_event(n, node_id=f"pump-{n:05d}", kind=kind)
    return event.event_id, outbox.put(event, encode_event(event, "s"))


async def test_an_alert_burst_over_the_budget_loses_no_alert(tmp_path: Path) -> None:
    hook = Receiver(online=False)
    changes: list[bool] = []
    outbox = Outbox(
        tmp_path / "outbox.db",
        [hook],
        retry_first_s=0.02,
        retry_max_s=0.05,
        queue_max_events=50,
        max_bytes=BUDGET,
        on_full=changes.append,
    )
    async with running(outbox):
        raised = [put(outbox, n) for n in range(2000)]  # a burst far past budget and queue
        assert all(taken for _id, taken in raised)
        assert outbox.pending_bytes > BUDGET
        assert changes == [True]

        cleared_id, taken = put(outbox, 0, AlertEventKind.CLEARED)
        assert not taken
        _acked, taken = put(outbox, 1, AlertEventKind.ACKNOWLEDGED)
        assert not taken
        escalated_id, taken = put(outbox, 2, AlertEventKind.ESCALATED)
        assert taken
        assert outbox.refused == 2
        assert outbox.dropped == 0

        hook.online = True  # the internet is back
        want = [event_id for event_id, _ in raised] + [escalated_id]
        await wait_until(lambda: len(hook.received) == len(want), timeout_s=60, what="all")
        assert hook.received == want  # every alert, once, in order
        assert cleared_id not in hook.received
        await wait_until(lambda: changes == [True, False], what="the outbox back under budget")
        assert outbox.pending_bytes == 0
        _id, taken = put(outbox, 5000, AlertEventKind.CLEARED)
        assert taken


async def test_the_budget_counts_what_a_restart_finds_undelivered(tmp_path: Path) -> None:
    hook = Receiver(online=False)
    first = Outbox(tmp_path / "outbox.db", [hook], retry_first_s=0.02, max_bytes=BUDGET)
    async with running(first):
        for n in range(200):
            put(first, n)
        await wait_until(lambda: first.store.pending_bytes() == first.pending_bytes, what="all")
        held = first.pending_bytes
    changes: list[bool] = []
    again = Outbox(
        tmp_path / "outbox.db", [hook], retry_first_s=0.02, max_bytes=BUDGET, on_full=changes.append
    )
    async with running(again):
        assert again.pending_bytes == held > BUDGET
        assert changes == [True]
        assert not put(again, 0, AlertEventKind.RENOTIFIED)[1]
