"""AlertRunner: the engine on its own thread between the scoring pipeline and the outputs.

Real engine, real SQLite alert store in tmp_path; only the delivery end is a list.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.alerts.config import load_alerts_config
from gateway.alerts.engine import AlertEngine
from gateway.alerts.runner import AlertRunner
from gateway.events import (
    AlertEvent,
    AlertEventKind,
    AlertState,
    AnomalyScore,
    ChannelReading,
    NodeHealth,
    Observation,
    ScoreSource,
)
from gateway.store.alerts import AlertStore
from tests.fixtures.gateway import wait_until

T0 = 1_700_000_000_000
RULES: dict[str, Any] = {
    "current_high": {"kind": "threshold", "channel": "current", "above": 10.0},
    "battery_low": {"kind": "battery", "below_mv": 3300, "hysteresis_mv": 100},
    "anomaly": {"kind": "anomaly", "threshold": 1.0, "min_duration_s": 0},
}
CONFIG = load_alerts_config({"use_default_rules": False, "rules": RULES})


def reading(node: str, t: int, value: float) -> ChannelReading:
    return ChannelReading(node, T0 + t, "current", value)


@contextlib.asynccontextmanager
async def running(runner: AlertRunner) -> AsyncIterator[AlertRunner]:
    task = asyncio.create_task(runner.run(), name="test:alerts")
    try:
        async with asyncio.timeout(10):
            await runner.ready.wait()
        yield runner
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def crossing_stream(nodes: int, cycles: int) -> list[Observation]:
    """Each node's current goes above 10 A and back, ``cycles`` times, nodes interleaved."""
    out: list[Observation] = []
    for c in range(cycles):
        for high in (True, False):
            for n in range(nodes):
                out.append(
                    reading(f"pump-{n}", c * 1000 + (0 if high else 500), 20.0 if high else 1.0)
                )
    return out


async def test_events_come_out_in_the_order_the_engine_made_them(tmp_path: Path) -> None:
    observations = crossing_stream(nodes=4, cycles=25)
    expected = AlertEngine(CONFIG).observe_many(observations)  # the engine alone, same input
    got: list[AlertEvent] = []
    runner = AlertRunner(CONFIG, tmp_path / "alerts.db", got.append)
    async with running(runner):
        # Submitted in many small pieces, as the pipeline does after each commit.
        for i in range(0, len(observations), 7):
            runner.submit(observations[i : i + 7])
            if i % 21 == 0:
                await asyncio.sleep(0)
        await wait_until(lambda: len(got) >= len(expected), 10, "all events delivered")
    assert [e.event_id for e in got] == [e.event_id for e in expected]
    assert len(got) == 4 * 25 * 2  # a raise and a clear per node and cycle
    for node in range(4):
        kinds = [e.kind for e in got if e.alert.node_id == f"pump-{node}"]
        assert kinds == [AlertEventKind.RAISED, AlertEventKind.CLEARED] * 25
    assert runner.evaluated == len(observations)
    assert runner.events == len(got)
    assert runner.dropped == 0


async def test_overflow_drops_the_oldest_channel_readings_only_and_counts_them(
    tmp_path: Path,
) -> None:
    got: list[AlertEvent] = []
    runner = AlertRunner(CONFIG, tmp_path / "alerts.db", got.append, max_pending=10)
    # Submitted before the engine runs: everything waits in the runner's queue.
    old_highs = [reading("pump-1", t, 50.0) for t in range(10)]  # would raise current_high
    health = NodeHealth("pump-2", T0 + 10, 3000, -60, 4096)  # raises battery_low
    score = AnomalyScore("pump-3", T0 + 11, ScoreSource.GATEWAY, 3.0, "1.0.0")  # raises anomaly
    newer_lows = [reading("pump-1", 20 + t, 1.0) for t in range(5)]
    runner.submit(old_highs)
    runner.submit([health, score])
    runner.submit(newer_lows)
    assert runner.dropped == 7  # 17 waiting, 10 allowed: the 7 oldest readings go

    async with running(runner):
        await wait_until(lambda: runner.evaluated == 10, 10, "the kept observations evaluated")
    # 3 of the high readings survived (the newest ones), so current_high was raised and then
    # cleared by the lows; the health and the score, never dropped, raised their alerts.
    assert sorted((e.alert.rule, e.alert.node_id, e.kind.value) for e in got) == [
        ("anomaly", "pump-3", "raised"),
        ("battery_low", "pump-2", "raised"),
        ("current_high", "pump-1", "cleared"),
        ("current_high", "pump-1", "raised"),
    ]
    raised = next(e for e in got if e.alert.rule == "current_high")
    assert raised.alert.raised_at_ms == T0 + 7  # the first surviving reading


async def test_overflow_never_drops_scores_or_health_even_beyond_the_bound(
    tmp_path: Path,
) -> None:
    runner = AlertRunner(CONFIG, tmp_path / "alerts.db", lambda _e: None, max_pending=3)
    scores = [AnomalyScore("pump-1", T0 + t, ScoreSource.GATEWAY, 0.1, "1") for t in range(6)]
    runner.submit([reading("pump-1", 0, 1.0), *scores, reading("pump-1", 1, 1.0)])
    assert runner.dropped == 2
    async with running(runner):
        await wait_until(lambda: runner.evaluated == 6, 10, "the six scores evaluated")


async def test_acknowledge_is_recorded_and_delivered_like_any_event(tmp_path: Path) -> None:
    got: list[AlertEvent] = []
    path = tmp_path / "alerts.db"
    runner = AlertRunner(CONFIG, path, got.append)
    async with running(runner):
        runner.submit([reading("pump-1", 0, 20.0)])
        await wait_until(lambda: len(got) == 1, 10, "the alert raised")
        alert_id = got[0].alert.alert_id
        event = await runner.acknowledge(alert_id, "ops@site", "motor checked")
        assert event.kind is AlertEventKind.ACKNOWLEDGED
        assert got[-1] == event
        assert event.alert.acked_by == "ops@site"
        assert event.alert.ack_comment == "motor checked"
        assert runner.engine is not None
        assert [a.state for a in runner.engine.open_alerts()] == [AlertState.ACKNOWLEDGED]
    with AlertStore(path) as store:  # durable: another reader sees it after the runner stopped
        stored = store.get(alert_id)
    assert stored is not None
    assert stored.state is AlertState.ACKNOWLEDGED
    assert stored.acked_by == "ops@site"


async def test_a_restarted_runner_reloads_open_alerts_and_clears_them_later(
    tmp_path: Path,
) -> None:
    path = tmp_path / "alerts.db"
    first: list[AlertEvent] = []
    async with running(AlertRunner(CONFIG, path, first.append)) as runner:
        runner.submit([reading("pump-1", 0, 20.0), reading("pump-2", 0, 20.0)])
        runner.submit([reading("pump-2", 100, 1.0)])
        await wait_until(lambda: len(first) == 3, 10, "two raised, one cleared")
    open_id = next(e.alert.alert_id for e in first if e.alert.node_id == "pump-1")

    second: list[AlertEvent] = []
    async with running(AlertRunner(CONFIG, path, second.append)) as runner:
        assert runner.engine is not None
        reloaded = runner.engine.open_alerts()
        assert [(a.alert_id, a.state) for a in reloaded] == [(open_id, AlertState.RAISED)]
        # Still above the threshold after the restart: no second alert for the same key.
        runner.submit([reading("pump-1", 1000, 25.0)])
        runner.submit([reading("pump-1", 2000, 1.0)])
        await wait_until(lambda: len(second) == 1, 10, "the reloaded alert cleared")
        assert runner.evaluated == 2
    assert second[0].kind is AlertEventKind.CLEARED
    assert second[0].alert.alert_id == open_id


async def test_an_alert_evaluated_just_before_a_stop_is_recorded_and_delivered(
    tmp_path: Path,
) -> None:
    got: list[AlertEvent] = []
    runner = AlertRunner(CONFIG, tmp_path / "alerts.db", got.append)
    async with running(runner):
        runner.submit([reading("pump-1", 0, 50.0)])  # evaluated now, on the loop
        # Stopped before the store's thread has had a turn.
    assert [(e.alert.rule, e.kind) for e in got] == [("current_high", AlertEventKind.RAISED)]
    store = AlertStore(tmp_path / "alerts.db")
    store.open()
    try:
        assert [e.event_id for e in store.history()] == [got[0].event_id]
    finally:
        store.close()


async def test_an_event_is_delivered_only_once_it_is_recorded(tmp_path: Path) -> None:
    got: list[AlertEvent] = []
    recorded: list[str] = []

    def deliver(event: AlertEvent) -> None:
        store = AlertStore(tmp_path / "alerts.db")
        store.open()
        try:  # what a reader of the history sees at the moment of delivery
            recorded.extend(e.event_id for e in store.history() if e.event_id == event.event_id)
        finally:
            store.close()
        got.append(event)

    runner = AlertRunner(CONFIG, tmp_path / "alerts.db", deliver)
    async with running(runner):
        runner.submit([reading("pump-1", 0, 50.0), reading("pump-1", 500, 1.0)])
        await wait_until(lambda: len(got) == 2, 10, "raise and clear delivered")
    assert recorded == [e.event_id for e in got]


async def test_a_recording_that_raises_stops_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full or failing disk is the store's business (it holds events and retries); anything
    # else raised while recording is a bug, and the runner must not carry on past it.
    def broken(self: AlertEngine, events: list[AlertEvent]) -> None:
        raise RuntimeError("recording is broken")

    monkeypatch.setattr(AlertEngine, "record", broken)
    got: list[AlertEvent] = []
    runner = AlertRunner(CONFIG, tmp_path / "alerts.db", got.append)
    task = asyncio.create_task(runner.run())
    async with asyncio.timeout(10):
        await runner.ready.wait()
    runner.submit([reading("pump-1", 0, 50.0)])
    with pytest.raises(ExceptionGroup) as caught:
        async with asyncio.timeout(10):
            await task
    assert caught.group_contains(RuntimeError, match="recording is broken")
    assert got == []  # never delivered unrecorded
