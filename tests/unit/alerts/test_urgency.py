"""The threshold screen: which readings may raise a threshold alert, judged before the commit.

A reading it calls urgent skips the journal writer's group-commit hold. It may call a reading
urgent that raises nothing, but never misses one the alert engine raises an alert on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.alerts.config import load_alerts_config
from gateway.alerts.engine import AlertEngine
from gateway.alerts.urgency import ThresholdScreen
from gateway.app import Gateway
from gateway.events import AlertEventKind, ChannelReading
from gateway.ingest import Envelope
from gateway.protocol.messages import (
    Channel,
    NodeInference,
    ReadingBatch,
    Sample,
    Status,
    TimeBase,
    Transport,
)
from tests.fixtures.gateway import gateway_config

CHANNELS = (Channel("vib_rms", "g"), Channel("current", "A"), Channel("pressure", "bar"))


def screen(rules: dict[str, Any], **section: Any) -> ThresholdScreen | None:
    config = load_alerts_config({"use_default_rules": False, "rules": rules, **section})
    return ThresholdScreen.from_config(config)


def batch(
    *rows: tuple[float, float, float], channels: tuple[Channel, ...] = CHANNELS
) -> ReadingBatch:
    samples = tuple(Sample(i, row) for i, row in enumerate(rows))
    return ReadingBatch("pump-1", 1, 1, TimeBase.UPTIME_MS, channels, samples)


HIGH_CURRENT = {"kind": "threshold", "channel": "current", "above": 50.0}
LOW_PRESSURE = {"kind": "threshold", "channel": "pressure", "below": 1.0}


def test_a_reading_at_or_above_an_above_limit_is_urgent() -> None:
    s = screen({"high_current": HIGH_CURRENT})
    assert s is not None
    assert s(batch((0.1, 50.0, 3.0)))
    assert s(batch((0.1, 80.0, 3.0)))
    assert not s(batch((0.1, 49.9, 3.0)))


def test_a_reading_at_or_below_a_below_limit_is_urgent() -> None:
    s = screen({"low_pressure": LOW_PRESSURE})
    assert s is not None
    assert s(batch((0.1, 5.0, 1.0)))
    assert not s(batch((0.1, 5.0, 1.1)))


def test_any_sample_of_a_batch_makes_it_urgent() -> None:
    s = screen({"high_current": HIGH_CURRENT})
    assert s is not None
    assert s(batch((0.1, 5.0, 3.0), (0.1, 5.0, 3.0), (0.1, 60.0, 3.0)))
    assert not s(batch((0.1, 5.0, 3.0), (0.1, 6.0, 3.0)))


def test_of_several_rules_on_one_channel_the_loosest_limit_counts() -> None:
    s = screen(
        {
            "warn": {**HIGH_CURRENT, "above": 40.0},
            "crit": {**HIGH_CURRENT, "above": 60.0},
        }
    )
    assert s is not None
    assert s(batch((0.1, 45.0, 3.0)))


def test_a_channel_no_rule_watches_is_never_urgent() -> None:
    s = screen({"high_current": HIGH_CURRENT})
    assert s is not None
    other = (Channel("temperature", "degC"), Channel("vib_rms", "g"), Channel("flow", "l/min"))
    assert not s(batch((1000.0, 1000.0, 1000.0), channels=other))


def test_messages_other_than_readings_are_never_urgent() -> None:
    s = screen({"high_current": HIGH_CURRENT})
    assert s is not None
    status = Status("pump-1", 1, 2, TimeBase.UPTIME_MS, 5, 5, 2000, None, None, "1.0.0", 0)
    inference = NodeInference(
        "pump-1", 1, 3, TimeBase.UPTIME_MS, 5, "m", "1.0.0", b"\x00" * 8, 0.99, 1, 100
    )
    assert not s(status)
    assert not s(inference)


def test_without_threshold_rules_there_is_no_screen() -> None:
    # The default rules (anomaly, silence, battery, gaps) watch no reading's value.
    assert screen({}, use_default_rules=True) is None
    assert screen({"high_current": {**HIGH_CURRENT, "enabled": False}}) is None


def test_node_selectors_do_not_narrow_the_screen() -> None:
    # Coarse on purpose: a reading from a node the rule does not select may be committed
    # early (CPU), which is harmless; holding back one it does select would not be.
    s = screen({"high_current": {**HIGH_CURRENT, "nodes": ["fan-*"]}})
    assert s is not None
    assert s(batch((0.1, 80.0, 3.0)))


@settings(max_examples=300, deadline=None)
@given(
    above=st.floats(-100, 100, allow_nan=False),
    hysteresis=st.floats(0, 10, allow_nan=False),
    values=st.lists(st.floats(-200, 200, allow_nan=False), min_size=1, max_size=20),
)
def test_every_reading_the_engine_raises_an_alert_on_was_urgent(
    above: float, hysteresis: float, values: list[float]
) -> None:
    rule = {"kind": "threshold", "channel": "current", "above": above, "hysteresis": hysteresis}
    config = load_alerts_config({"use_default_rules": False, "rules": {"r": rule}})
    engine = AlertEngine(config)
    s = ThresholdScreen.from_config(config)
    assert s is not None
    for i, value in enumerate(values):
        events = engine.observe(ChannelReading("pump-1", 1000 * i, "current", value))
        if any(e.kind is AlertEventKind.RAISED for e in events):
            assert s(batch((0.0, value, 3.0)))


async def test_the_gateway_screens_its_ingest_queue_with_its_threshold_rules(
    tmp_path: Path,
) -> None:
    config = gateway_config(tmp_path, alerts={"rules": {"high_current": HIGH_CURRENT}})
    queue = Gateway(config).queue
    plain = Envelope(batch((0.1, 5.0, 3.0)), Transport.SERIAL, 0)
    past = Envelope(batch((0.1, 80.0, 3.0)), Transport.SERIAL, 0)
    async with asyncio.timeout(10):  # a minute's hold, over at once
        await queue.hold(60, [plain, past])


async def test_without_threshold_rules_the_gateway_holds_every_reading(tmp_path: Path) -> None:
    queue = Gateway(gateway_config(tmp_path)).queue
    past = Envelope(batch((0.1, 80.0, 3.0)), Transport.SERIAL, 0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await queue.hold(60, [past])
