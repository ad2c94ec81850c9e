"""How a node is being scored, in words for its page: which detector, fusion, top channels.

Read from the latest :class:`~gateway.events.AnomalyScore` of each source the scoring
pipeline emitted for the node (kept by :class:`dashboards.view.LiveScores`); nothing here
asks the pipeline itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.events import AnomalyScore, ScoreSource
from gateway.pipeline.fallback import OWN_BASELINE


@dataclass(frozen=True, slots=True)
class ScoringView:
    detector: str  # which gateway detector scored the node, in words
    fallback: bool  # the fallback (T² + MSET over the node's own channels), not a trained model
    gateway: AnomalyScore | None
    node: AnomalyScore | None
    fused: AnomalyScore | None
    fusion: str  # "alarm", "normal", or why there is no fused score
    channels: tuple[tuple[str, float], ...]  # top contributing channels, largest share first


def describe_scoring(
    latest: dict[ScoreSource, AnomalyScore], *, fusion_configured: bool
) -> ScoringView:
    gateway = latest.get(ScoreSource.GATEWAY)
    fused = latest.get(ScoreSource.FUSED)
    if gateway is None:
        detector, fallback = "no gateway score yet (it needs a full window of readings)", False
    elif gateway.model_version == OWN_BASELINE:
        detector, fallback = (
            "fallback: Hotelling T² + MSET on the node's own channels "
            "(the trained gateway model does not cover this node's channels)",
            True,
        )
    else:
        detector, fallback = f"trained gateway model {gateway.model_version}", False
    if fused is not None:
        fusion = "alarm" if fused.score >= 1.0 else "normal"
    elif fusion_configured:
        fusion = "no fused score yet"
    else:
        fusion = "off (no [scoring] fusion_rule_path)"
    channels = gateway.channels if gateway is not None else ()
    if fused is not None and fused.channels:
        channels = fused.channels
    return ScoringView(
        detector, fallback, gateway, latest.get(ScoreSource.NODE), fused, fusion, channels
    )
