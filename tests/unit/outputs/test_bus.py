"""AlertBus: publish never blocks; each subscriber gets every event in order or a Gap."""

from __future__ import annotations

import asyncio

from gateway.outputs.bus import AlertBus, Gap
from tests.unit.outputs.helpers import make_event


async def test_every_subscriber_receives_every_event_in_order() -> None:
    bus = AlertBus()
    a, b = bus.subscribe(10), bus.subscribe(10)
    events = [make_event(i) for i in range(5)]
    for e in events:
        bus.publish(e)
    bus.close()
    assert [x async for x in a] == events
    assert [x async for x in b] == events


async def test_a_full_subscriber_loses_the_oldest_and_sees_a_gap_marker_first() -> None:
    bus = AlertBus()
    sub = bus.subscribe(3)
    events = [make_event(i) for i in range(10)]
    for e in events:
        bus.publish(e)  # nobody reads: must not block
    assert sub.dropped == 7
    assert bus.dropped == 7
    bus.close()
    assert [x async for x in sub] == [Gap(7), *events[7:]]


async def test_gap_marker_sits_where_the_events_were_lost() -> None:
    bus = AlertBus()
    sub = bus.subscribe(2)
    bus.publish(make_event(0))
    assert await anext(sub) == make_event(0)
    for i in range(1, 5):
        bus.publish(make_event(i))
    assert await anext(sub) == Gap(2)
    assert await anext(sub) == make_event(3)
    assert await anext(sub) == make_event(4)


async def test_a_waiting_subscriber_wakes_on_publish() -> None:
    bus = AlertBus()
    async with bus.subscribe(5) as sub:
        waiter = asyncio.create_task(anext(sub), name="test:waiter")
        await asyncio.sleep(0.01)
        assert not waiter.done()
        bus.publish(make_event(1))
        assert await asyncio.wait_for(waiter, 1) == make_event(1)
    assert bus.subscribers == 0


async def test_a_slow_subscriber_does_not_affect_a_fast_one() -> None:
    bus = AlertBus()
    slow = bus.subscribe(1)
    fast = bus.subscribe(100)
    for i in range(50):
        bus.publish(make_event(i))
    assert fast.dropped == 0
    assert slow.dropped == 49
    fast.close()
    assert len([x async for x in fast]) == 50


async def test_closed_subscription_stops_receiving_and_leaves_the_bus() -> None:
    bus = AlertBus()
    sub = bus.subscribe(5)
    bus.publish(make_event(0))
    sub.close()
    bus.publish(make_event(1))
    assert [x async for x in sub] == [make_event(0)]
    assert bus.subscribers == 0
    assert bus.published == 2


async def test_subscribing_after_close_ends_at_once() -> None:
    bus = AlertBus()
    bus.close()
    assert [x async for x in bus.subscribe(5)] == []
