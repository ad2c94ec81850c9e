"""What the dashboard may see and do of a running gateway: the one seam between them.

``gateway/app.py`` builds a :class:`GatewayView` from its components and hands it to
:func:`dashboards.app.create_app`; the dashboard never imports the gateway's internals. It
reads through the stores' own readers (read-only SQLite connections on worker threads) and
acts only through the alert runner's public coroutines. Tests build one from a real gateway.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.alerts.config import SilenceWindow
from gateway.config import GatewayConfig
from gateway.events import AlertEvent, AnomalyScore, Observation, ScoreSource

# Bounds (architecture invariant 9): a stream of made-up node ids cannot grow these.
MAX_NODES = 5000
POINTS_PER_NODE = 600


class AlertActions(Protocol):
    """The alert engine's public API (``gateway.alerts.runner.AlertRunner``)."""

    async def acknowledge(self, alert_id: str, by: str, comment: str) -> AlertEvent: ...

    async def clear(self, alert_id: str, by: str, comment: str) -> AlertEvent: ...

    async def add_silence(self, window: SilenceWindow) -> None: ...


class ScoreRing:
    """The last ``POINTS_PER_NODE`` (t_ms, score) pairs of one node and source.

    Two flat arrays instead of a deque of tuples: a (t, score) tuple costs about 120 bytes
    with its int and float, so 500 nodes x 3 sources x 600 points held about 100 MB; here it
    is 16 bytes a point.
    """

    __slots__ = ("_head", "_t", "_v")

    def __init__(self) -> None:
        self._t = array("q")
        self._v = array("d")
        self._head = 0  # once full: the oldest point, overwritten next

    def append(self, t_ms: int, score: float) -> None:
        if len(self._t) < POINTS_PER_NODE:
            self._t.append(t_ms)
            self._v.append(score)
            return
        self._t[self._head] = t_ms
        self._v[self._head] = score
        self._head = (self._head + 1) % POINTS_PER_NODE

    def since(self, t_ms: int) -> list[tuple[int, float]]:
        """The points newer than ``t_ms``, oldest first."""
        h = self._head
        ts, vs = self._t[h:] + self._t[:h], self._v[h:] + self._v[:h]
        return [(t, v) for t, v in zip(ts, vs, strict=True) if t > t_ms]

    def last(self) -> float:
        return self._v[self._head - 1]


class LiveScores:
    """Recent anomaly scores per node and source, fed by the scoring pipeline's sink.

    The gateway model's scores are not stored in the journal, so the node page's chart
    takes them from here; node-model scores are in the journal as inference results. The
    latest score of each source is kept whole too: which detector made it (its
    ``model_version``: a trained model's version, or the fallback's ``own-baseline``) and the
    channels that contributed most. Called on the event loop; the dashboard reads it on the
    loop too.
    """

    def __init__(self) -> None:
        self._points: dict[tuple[str, ScoreSource], ScoreRing] = {}
        self._latest: dict[tuple[str, ScoreSource], AnomalyScore] = {}
        self.dropped_nodes = 0

    def __call__(self, observations: Sequence[Observation]) -> None:
        for obs in observations:
            if isinstance(obs, AnomalyScore):
                key = (obs.node_id, obs.source)
                points = self._points.get(key)
                if points is None:
                    if len(self._points) >= MAX_NODES * 2:
                        self.dropped_nodes += 1
                        continue
                    points = self._points[key] = ScoreRing()
                points.append(obs.t_ms, obs.score)
                self._latest[key] = obs  # same keys as _points: bounded with them

    def since(self, node_id: str, source: ScoreSource, t_ms: int) -> list[tuple[int, float]]:
        points = self._points.get((node_id, source))
        return points.since(t_ms) if points is not None else []

    def latest_scores(self, node_id: str) -> dict[ScoreSource, AnomalyScore]:
        """The latest score of each source for a node (gateway, node, fused, shadow)."""
        return {
            source: score
            for source in ScoreSource
            if (score := self._latest.get((node_id, source))) is not None
        }

    def latest(self, node_id: str, source: ScoreSource) -> float | None:
        points = self._points.get((node_id, source))
        return points.last() if points is not None else None


async def _done() -> None:
    return None


@dataclass(frozen=True)
class GatewayView:
    """A running gateway as the dashboard sees it."""

    config: GatewayConfig
    alerts: AlertActions
    live: LiveScores = field(default_factory=LiveScores)
    healthy: Callable[[], bool] = lambda: True
    # Resolves once the alert engine accepts actions (acknowledge, clear, silence).
    engine_ready: Callable[[], Awaitable[object]] = field(default=_done)
    started_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    # The dashboard's port once it listens (port 0 in tests picks a free one).
    bound_port: list[int] = field(default_factory=list)
