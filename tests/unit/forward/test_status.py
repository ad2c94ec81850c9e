"""Node status changes, not every heartbeat, go upstream as events."""

from __future__ import annotations

import dataclasses

from gateway.forward.status import StatusEvents
from gateway.protocol.messages import SlotInfo, Status, TimeBase

HOUR = 3_600_000


def _status(
    boot: int = 1, battery: int = 3300, fw: str = "1.0.0", model: str = "pump@1.0"
) -> Status:
    name, version = model.split("@")
    slot = SlotInfo(0, name, version, b"\x00" * 8, 1, True, True)
    return Status("n1", boot, 1, TimeBase.UNIX_MS, 0, 1000, battery, -60, 4096, fw, 0, (slot,))


def test_only_changes_and_a_keepalive_are_sent() -> None:
    events = StatusEvents("s")
    sent = [
        events.offer(_status(), 0),  # first: sent
        events.offer(_status(battery=3290), 10_000),  # 10 mV: nothing new
        events.offer(_status(battery=3240), 20_000),  # 60 mV below the last sent: sent
        events.offer(_status(battery=3240, boot=2), 30_000),  # reboot: sent
        events.offer(_status(battery=3240, boot=2, fw="1.1.0"), 40_000),  # firmware: sent
        events.offer(_status(battery=3240, boot=2, fw="1.1.0", model="pump@2.0"), 50_000),  # model
        events.offer(_status(battery=3240, boot=2, fw="1.1.0", model="pump@2.0"), 60_000),
        events.offer(_status(battery=3240, boot=2, fw="1.1.0", model="pump@2.0"), 50_000 + HOUR),
    ]
    assert [p is not None for p in sent] == [True, False, True, True, True, True, False, True]
    assert events.suppressed == 2
    last = sent[-1]
    assert last is not None
    assert dict(last.tags) == {"site": "s", "node": "n1", "firmware": "1.1.0", "model": "pump@2.0"}
    assert dict(last.fields)["battery_mv"] == 3240


def test_bounded_per_node_state() -> None:
    events = StatusEvents("s", max_nodes=3)
    for i in range(10):
        events.offer(dataclasses.replace(_status(), node_id=f"n{i}"), i)
    assert len(events) == 3
    assert events.offer(dataclasses.replace(_status(), node_id="n0"), 20) is not None, "forgotten"
