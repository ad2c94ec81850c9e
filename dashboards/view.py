"""What the dashboard may see and do of a running gateway: the one seam between them.

``gateway/app.py`` builds a :class:`GatewayView` from its components and hands it to
:func:`dashboards.app.create_app`; the dashboard never imports the gateway's internals. It
reads through the stores' own readers (read-only SQLite connections on worker threads) and
acts only through the alert runner's public coroutines. Tests build one from a real gateway.
"""

from __future__ import annotations

import time
from collections import deque
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
        self._points: dict[tuple[str, ScoreSource], deque[tuple[int, float]]] = {}
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
                    points = self._points[key] = deque(maxlen=POINTS_PER_NODE)
                points.append((obs.t_ms, obs.score))
                self._latest[key] = obs  # same keys as _points: bounded with them

    def since(self, node_id: str, source: ScoreSource, t_ms: int) -> list[tuple[int, float]]:
        points = self._points.get((node_id, source))
        return [p for p in points if p[0] > t_ms] if points else []

    def latest_scores(self, node_id: str) -> dict[ScoreSource, AnomalyScore]:
        """The latest score of each source for a node (gateway, node, fused, shadow)."""
        return {
            source: score
            for source in ScoreSource
            if (score := self._latest.get((node_id, source))) is not None
        }

    def latest(self, node_id: str, source: ScoreSource) -> float | None:
        points = self._points.get((node_id, source))
        return points[-1][1] if points else None


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
