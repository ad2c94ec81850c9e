"""A flood of bad input makes one warning per interval, with the count of the rest."""

from __future__ import annotations

import logging

import pytest

from gateway.log_limit import LimitedWarning


def test_a_flood_logs_once_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = LimitedWarning(logging.getLogger("t"), interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        for i in range(10_000):
            now[0] = i * 0.001  # 10,000 bad messages in 10 s
            limited.warning("%s: bad message", "pump-01")
        now[0] = 10.5
        limited.warning("%s: bad message", "pump-01")
    assert [r.getMessage() for r in caplog.records] == [
        "pump-01: bad message",
        "pump-01: bad message (and 9999 more like it in the last 10 s)",
    ]
    assert limited.logged == 2
