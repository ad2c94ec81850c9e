"""The alert history and the notification outbox on a disk that fills up (a real 4 MB tmpfs,
mostly taken by a filler file): alerting carries on, nothing crashes, the fault is reported
once (the callbacks behind the alert_storage and outbox_storage system alerts), and when
space returns the history is whole and every notification is delivered, in order.

Before: the alert store's ROLLBACK raised "cannot rollback" over the SQLITE_FULL, the
engine's call failed and the TaskGroup took the gateway down; the outbox writer did the
same. The outbox's destination is the in-test Receiver of tests/unit/outputs (no server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.alerts.config import AlertsConfig
from gateway.alerts.runner import AlertRunner
from gateway.events import AlertEvent, AlertEventKind, ChannelReading
from gateway.outputs.outbox import Outbox
from gateway.outputs.payload import encode_event
from gateway.store.alerts import AlertStore
from tests.fixtures.gateway import wait_until
from tests.fixtures.tmpfs import fill_disk, mounted_tmpfs
from tests.unit.outputs.helpers import make_event
from tests.unit.outputs.test_outbox import Receiver, running

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tiny", "4m") as mount:
        yield mount


def hot(node: str, t_s: int, value: float) -> ChannelReading:
    return ChannelReading(node, t_s * 1000, "current", value)


async def test_the_alert_history_on_a_full_disk_degrades_and_catches_up(tiny_disk: Path) -> None:
    config = AlertsConfig(
        use_default_rules=False,
        tick_interval_s=0.05,
        renotify_interval_s=0,
        escalation_timeout_s=0,
        rules={"hot": {"kind": "threshold", "channel": "current", "above": 10.0}},
    )
    delivered: list[AlertEvent] = []
    faults: list[str | None] = []
    runner = AlertRunner(
        config, tiny_disk / "alerts.db", delivered.append, on_store_fault=faults.append
    )
    task = asyncio.create_task(runner.run(), name="test:alerts")
    try:
        await asyncio.wait_for(runner.ready.wait(), 10)
        runner.submit([hot("pump-01", 1, 20.0)])
        await wait_until(lambda: len(delivered) == 1, what="the first alert")
        filler = fill_disk(tiny_disk)
        # The disk is full: alerts for 50 nodes still reach the outputs.
        runner.submit([hot(f"pump-{n:02d}", 2, 20.0 + n) for n in range(2, 52)])
        await wait_until(lambda: len(delivered) == 51, what="50 alerts on a full disk")
        await wait_until(lambda: len(faults) == 1, what="the fault reported")
        assert faults[0] is not None
        assert "full" in faults[0]
        assert not task.done()
        filler.unlink()
        await wait_until(lambda: faults[-1] is None, what="the history writable again")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    with AlertStore(tiny_disk / "alerts.db") as store:
        history = store.history(limit=1000)
    assert len(history) == 51  # none lost from the history either
    assert {e.event_id for e in history} == {e.event_id for e in delivered}
    assert all(e.kind is AlertEventKind.RAISED for e in delivered)


async def test_the_outbox_on_a_full_disk_holds_notifications_and_delivers_them(
    tiny_disk: Path,
) -> None:
    hook = Receiver()
    faults: list[str | None] = []
    outbox = Outbox(
        tiny_disk / "outbox.db", [hook], retry_first_s=0.05, retry_max_s=0.2, on_fault=faults.append
    )
    sent: list[str] = []

    def put(n: int) -> None:
        event = make_event(n, node_id=f"pump-{n:03d}")
        assert outbox.put(event, encode_event(event, "s"))
        sent.append(event.event_id)

    async with running(outbox) as ob:
        put(0)
        await wait_until(lambda: len(hook.received) == 1, what="the first notification")
        filler = fill_disk(tiny_disk)
        for n in range(1, 200):
            put(n)
        await wait_until(lambda: len(faults) == 1, what="the fault reported")
        assert faults[0] is not None
        assert ob.ready.is_set()  # still running: no exception escaped
        filler.unlink()
        await wait_until(lambda: len(hook.received) == 200, timeout_s=30, what="all 200")
    assert hook.received == sent  # every one, once, in order
    assert faults[-1] is None
