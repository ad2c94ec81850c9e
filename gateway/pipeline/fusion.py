"""Fusion of the gateway's and the node's own anomaly scores, per node.

Both scores are kept (:meth:`Fusion.scores`) and both are emitted as
:class:`~gateway.events.AnomalyScore` observations (``source=gateway`` and ``source=node``).
The node's raw score is put in threshold units first: divided by the threshold configured for
its model id (``scoring.node_thresholds``; unknown ids are taken as already in those units).

The disagreement rule (``scoring.disagreement``): whenever either score of a node updates, the
node's latest gateway score and latest node score are compared if their timestamps are within
``max_age_s`` of each other (otherwise there is nothing current to compare, and the state is
left as it was). They disagree when exactly one of them is ``>= 1.0``. A disagreement that has
lasted ``min_duration_s`` (by the scores' own timestamps, so replayed data behaves like live
data) emits a :class:`~gateway.events.Disagreement`, and again every ``min_duration_s`` while
it lasts; agreement resets the clock. Short flickers (one model reacting a few seconds before
the other at a fault's onset) therefore do not count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.events import AnomalyScore, Disagreement, ScoreSource
from gateway.pipeline.config import DisagreementConfig, ScoringConfig
from gateway.protocol.messages import NodeInference
from tinymodels.fusion_rule import ALARM, SETTLED, FusionRule, StateTracker, load_rule

STATE_NAMES = {ALARM: "alarm", SETTLED: "settled"}


def fusion_rule(config: ScoringConfig) -> FusionRule | None:
    """The configured fusion rule (``scoring.fusion_rule_path``), or None when unset."""
    return None if config.fusion_rule_path is None else load_rule(config.fusion_rule_path)


@dataclass(slots=True)
class NodeScores:
    """The latest score from each side for one node, and the disagreement state."""

    gateway: AnomalyScore | None = None
    node: AnomalyScore | None = None
    disagreeing_since_ms: int | None = None
    last_emitted_ms: int | None = None
    disagreements: int = 0
    tracker: StateTracker | None = None


class Fusion:
    def __init__(
        self,
        config: DisagreementConfig,
        node_thresholds: Mapping[str, float],
        rule: FusionRule | None = None,
    ) -> None:
        self._config = config
        self._rule = rule
        self._thresholds = dict(node_thresholds)
        self._min_ms = int(config.min_duration_s * 1000)
        self._max_age_ms = int(config.max_age_s * 1000)
        self._nodes: dict[str, NodeScores] = {}

    def node_score(self, inference: NodeInference, t_ms: int) -> AnomalyScore:
        """The node's own inference as an AnomalyScore in threshold units."""
        threshold = self._thresholds.get(inference.model_id, 1.0)
        return AnomalyScore(
            inference.node_id,
            t_ms,
            ScoreSource.NODE,
            inference.score / threshold if threshold > 0 else inference.score,
            inference.model_version,
        )

    def scores(self, node_id: str) -> NodeScores | None:
        return self._nodes.get(node_id)

    def latest(self) -> dict[str, tuple[float | None, float | None]]:
        """Every node's latest (gateway, node) score in threshold units."""
        return {
            node_id: (
                s.gateway.score if s.gateway is not None else None,
                s.node.score if s.node is not None else None,
            )
            for node_id, s in self._nodes.items()
        }

    def fuse(self, score: AnomalyScore) -> AnomalyScore | None:
        """The fused score for a gateway ``score`` (call after :meth:`observe`); None for node
        and shadow scores, or without a rule."""
        return self.fuse_many([score])[0]

    def fuse_many(self, scores: Sequence[AnomalyScore]) -> list[AnomalyScore | None]:
        """:meth:`fuse` for each of ``scores`` in order, the rule's arithmetic in one array
        operation (each node's state machine then steps through its rows in order)."""
        rule = self._rule
        if rule is None:
            return [None] * len(scores)
        gateway = [s for s in scores if s.source is ScoreSource.GATEWAY]
        if not gateway:
            return [None] * len(scores)
        max_age = self._max_age_ms
        nan = float("nan")
        node_values = []
        for score in gateway:
            state = self._nodes.get(score.node_id)
            node = state.node if state is not None else None
            fresh = node is not None and abs(node.t_ms - score.t_ms) <= max_age
            node_values.append(node.score if fresh and node is not None else nan)
        # A missing node score (NaN) counts as the gateway score (FusionRule.fuse).
        values = iter(rule.fuse([s.score for s in gateway], node_values).tolist())
        out: list[AnomalyScore | None] = []
        for score in scores:
            if score.source is not ScoreSource.GATEWAY:
                out.append(None)
                continue
            fused = next(values)
            state = self._nodes.get(score.node_id)
            if state is not None:
                if state.tracker is None:
                    state.tracker = StateTracker(rule)
                state.tracker.update(fused)
                # While settled the alarm level is the rearm level: the emitted score is in
                # units of the level that raises an alarm now, so an alert on it clears once
                # the machine has settled and raises again on a new rise (the state stays
                # visible).
                fused /= state.tracker.level
            out.append(
                AnomalyScore(
                    score.node_id,
                    score.t_ms,
                    ScoreSource.FUSED,
                    fused,
                    score.model_version,
                    score.channels,  # the gateway's channels' doing, as far as known
                )
            )
        return out

    def state(self, node_id: str) -> str:
        """``normal``, ``alarm`` or ``settled`` by the fusion rule's state machine."""
        state = self._nodes.get(node_id)
        if state is None or state.tracker is None:
            return "normal"
        return STATE_NAMES.get(state.tracker.state, "normal")

    def observe(self, score: AnomalyScore) -> Disagreement | None:
        """Record ``score`` (gateway or node); return a Disagreement when the rule fires."""
        if score.source in (ScoreSource.SHADOW, ScoreSource.FUSED):
            return None
        state = self._nodes.get(score.node_id)
        if state is None:
            state = self._nodes[score.node_id] = NodeScores()
        if score.source is ScoreSource.GATEWAY:
            state.gateway = score
        else:
            state.node = score
        gw, node = state.gateway, state.node
        if not self._config.enabled or gw is None or node is None:
            return None
        if abs(gw.t_ms - node.t_ms) > self._max_age_ms:
            return None
        now = max(gw.t_ms, node.t_ms)
        if (gw.score >= 1.0) == (node.score >= 1.0):
            state.disagreeing_since_ms = None
            state.last_emitted_ms = None
            return None
        if state.disagreeing_since_ms is None:
            state.disagreeing_since_ms = now
        since = (
            state.last_emitted_ms
            if state.last_emitted_ms is not None
            else state.disagreeing_since_ms
        )
        if now - since < self._min_ms:
            return None
        state.last_emitted_ms = now
        state.disagreements += 1
        return Disagreement(score.node_id, now, gw.score, node.score)
