"""Node selectors and maintenance windows: which (node, rule) pairs are silenced when.

Windows come from the config (``[[alerts.silences]]``) and, at run time, from people (the
dashboard's "silence a node"). Pure: the time to judge is always passed in.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from gateway.alerts.config import SilenceWindow


def selector(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """A predicate for node ids matching any of ``patterns`` (exact ids or globs)."""
    if "*" in patterns:
        return lambda _node: True
    exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    globs = [p for p in patterns if p not in exact]
    if not globs:
        return exact.__contains__
    rx = re.compile("|".join(fnmatch.translate(g) for g in globs))
    return lambda node: node in exact or rx.match(node) is not None


class Silences:
    """Which (node, rule) pairs are in a silence window at a given wall-clock time."""

    def __init__(self, windows: tuple[SilenceWindow, ...]) -> None:
        self._windows: list[tuple[Callable[[str], bool], frozenset[str], Callable[[int], bool]]] = [
            (selector(w.nodes), frozenset(w.rules), self._when(w)) for w in windows
        ]

    @staticmethod
    def _when(w: SilenceWindow) -> Callable[[int], bool]:
        daily = w.daily_range()
        if daily is None:
            assert w.start is not None  # validated
            assert w.end is not None
            start_ms = int(w.start.timestamp() * 1000)
            end_ms = int(w.end.timestamp() * 1000)
            return lambda t_ms: start_ms <= t_ms < end_ms
        begin, end = daily
        zone = ZoneInfo(w.timezone)

        def in_daily(t_ms: int) -> bool:
            local = datetime.fromtimestamp(t_ms / 1000, UTC).astimezone(zone)
            now = time(local.hour, local.minute, local.second)
            if begin < end:
                return begin <= now < end
            return now >= begin or now < end  # wraps midnight

        return in_daily

    def add(self, window: SilenceWindow) -> None:
        """A window decided at run time (a person's maintenance window from the dashboard)."""
        self._windows.append((selector(window.nodes), frozenset(window.rules), self._when(window)))

    def __bool__(self) -> bool:
        return bool(self._windows)

    def active(self, node_id: str, rule: str, t_ms: int) -> bool:
        for matches, rules, when in self._windows:
            if (not rules or rule in rules) and matches(node_id) and when(t_ms):
                return True
        return False
