"""Scoring a node the gateway model does not cover, from its own baseline (issue 16).

A node none of whose channels map to the gateway model's (``scoring.channel_map``), or one that
lacks model inputs under ``missing_channels = "skip"``, used to go unscored. With
``scoring.fallback = "own_baseline"`` (the default) it is scored by the components that need no
training: Hotelling's T² in the principal subspace of its own baseline rows and an MSET-like
memory of them (:mod:`tinymodels.gateway_features`), over **all of its own channels**, fitted on
its first ``calibration_rows`` rows exactly as the gateway model's statistics are; each smoothed
over 5 rows, divided by its 0.99 quantile over the baseline, averaged. So 1.0 means "as high as
the worst of this node's own normal", the same unit as every other score.

Its scores are ``AnomalyScore(source=gateway)`` with ``model_version`` :data:`OWN_BASELINE`, so
the node page and an alert can say which detector scored the node; they carry the top channels
by share of T² and the MSET residual, named as the node names them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from gateway.events import AnomalyScore, ScoreSource
from gateway.pipeline.windows import NodeStream, Row
from gateway.protocol.messages import Channel
from tinymodels.attribution import top_channels
from tinymodels.gateway_features import FeatureConfig
from tinymodels.runtime import GatewayModel

OWN_BASELINE = "own-baseline:t2+mset"
LAYOUT_PREFIX = "own:"


def own_layout(channels: tuple[Channel, ...]) -> str:
    """The layout of rows that are a node's own channels, in its order."""
    return LAYOUT_PREFIX + json.dumps([c.name for c in channels], separators=(",", ":"))


def own_config(names: tuple[str, ...], calibration_rows: int) -> FeatureConfig:
    return FeatureConfig(
        channels=names,
        window=1,
        fit_rows=calibration_rows,
        # A channel that sat still during the baseline standardises to 0 (not to infinity).
        std_floor=tuple(1e-9 for _ in names),
        clip=10.0,
        smooth_rows=5,
        threshold_quantile=0.99,
        threshold_factor=1.0,
        components=("t2", "mset"),
        pca_variance=0.9,
        mset_memory=80,
    )


class FallbackScorer:
    """Per-node T² + MSET streams over the nodes' own channels. Owned by the scoring thread."""

    def __init__(self, calibration_rows: int) -> None:
        self.calibration_rows = calibration_rows
        self._streams: dict[str, NodeStream] = {}

    def score(self, model: GatewayModel, by_node: dict[str, list[Row]]) -> list[AnomalyScore]:
        """Scores for rows with an :func:`own_layout` (``model`` is only passed through: these
        streams have no autoencoder)."""
        out: list[AnomalyScore] = []
        for node_id, rows in by_node.items():
            out.extend(self._score_node(model, node_id, rows))
        return out

    def _score_node(
        self, model: GatewayModel, node_id: str, rows: Sequence[Row]
    ) -> list[AnomalyScore]:
        layout = rows[0].layout
        stream = self._streams.get(node_id)
        if stream is None or stream.layout != layout:
            names = tuple(json.loads(layout.removeprefix(LAYOUT_PREFIX)))
            cfg = own_config(names, self.calibration_rows)
            stream = self._streams[node_id] = NodeStream(
                node_id, cfg, self.calibration_rows, layout=layout
            )
        same = [r for r in rows if r.layout == layout]
        prepared = stream.prepare(model, same)
        if prepared is None:
            return []
        scores = stream.finish(prepared, None)
        names = stream.cfg.channels
        out = []
        for i, (t, s) in enumerate(zip(prepared.t_ms, scores.tolist(), strict=True)):
            shares = prepared.shares if s >= 1 else None
            top = top_channels(shares[i], names) if shares is not None else ()
            out.append(AnomalyScore(node_id, t, ScoreSource.GATEWAY, s, OWN_BASELINE, top))
        return out
