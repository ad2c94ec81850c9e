"""observe() stays cheap at the gateway's reading rate (target: 5k readings/s, p99 <= 20 ms)."""

from __future__ import annotations

import time

from gateway.alerts.config import load_alerts_config
from gateway.alerts.engine import AlertEngine
from gateway.events import ChannelReading


def test_fifty_thousand_readings_through_the_default_rules_and_a_threshold_take_well_under_a_second() -> (
    None
):
    # Typically ~1.5 us per reading; the bound is loose because the test machine is shared.
    rule = {"kind": "threshold", "channel": "current", "above": 1e9, "nodes": ["pump-*"]}
    eng = AlertEngine(load_alerts_config({"rules": {"hi": rule}}))
    readings = [
        ChannelReading(f"pump-{i % 50}", i, "pressure" if i % 2 else "current", 1.0)
        for i in range(50_000)
    ]
    started = time.perf_counter()
    for obs in readings:
        eng.observe(obs)
    assert time.perf_counter() - started < 1.0
    started = time.perf_counter()
    assert eng.tick(10_000) == []
    assert time.perf_counter() - started < 0.05
