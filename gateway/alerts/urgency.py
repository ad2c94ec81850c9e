"""Which incoming readings could raise a channel-threshold alert, judged before they are stored.

The journal writer holds small commits back so that what arrives meanwhile shares them
(``journal.min_commit_interval_s``, and at a site's trickle ``journal.trickle_commit_interval_s``):
every commit costs the same fsync and hand-offs whatever it carries. A reading past a threshold
rule's limit is the one whose alert someone is waiting for, so it is not held: the ingest queue
asks this screen about every message taken or arriving during a hold, and ends the hold at the
first that crosses (:meth:`gateway.ingest.IngestQueue.hold`).

The screen is coarse on purpose, and errs one way only. It ignores a rule's node selectors,
its hysteresis state and ``min_duration_s``, so it may commit a reading early that raises
nothing (a little CPU, never latency), and it never holds back a reading that raises an alert.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from gateway.alerts.config import AlertsConfig, ThresholdRule
from gateway.protocol.messages import Channel, ReadingBatch, UplinkMessage

# Per distinct channel list (the decoder hands out one tuple per list): which positions to
# compare, and with what. Bounded like the decoder's own channel cache.
_PLANS_MAX: Final = 1024

Plan = tuple[tuple[int, float, float], ...]  # (position, at or above, at or below)


class ThresholdScreen:
    """``screen(msg)``: True when a sample of ``msg`` is at or past a threshold rule's limit."""

    def __init__(self, rules: Iterable[ThresholdRule]) -> None:
        # The loosest limit per channel and direction: past it, some rule may fire.
        self._above: dict[str, float] = {}
        self._below: dict[str, float] = {}
        for rule in rules:
            if rule.above is not None:
                self._above[rule.channel] = min(self._above.get(rule.channel, math.inf), rule.above)
            if rule.below is not None:
                self._below[rule.channel] = max(
                    self._below.get(rule.channel, -math.inf), rule.below
                )
        self._plans: dict[tuple[Channel, ...], Plan] = {}

    @classmethod
    def from_config(cls, config: AlertsConfig) -> ThresholdScreen | None:
        """The screen for the threshold rules in force; None when there are none."""
        rules = config.threshold_rules()
        return cls(rules) if rules else None

    def _plan(self, channels: tuple[Channel, ...]) -> Plan:
        plan = self._plans.get(channels)
        if plan is None:
            plan = tuple(
                (i, self._above.get(ch.name, math.inf), self._below.get(ch.name, -math.inf))
                for i, ch in enumerate(channels)
                if ch.name in self._above or ch.name in self._below
            )
            if len(self._plans) >= _PLANS_MAX:
                self._plans.clear()
            self._plans[channels] = plan
        return plan

    def __call__(self, msg: UplinkMessage) -> bool:
        if type(msg) is not ReadingBatch:
            return False
        plan = self._plan(msg.channels)
        if not plan:
            return False
        for sample in msg.samples:
            values = sample.values
            for i, above, below in plan:
                value = values[i]
                if value >= above or value <= below:
                    return True
        return False
