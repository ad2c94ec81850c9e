"""What an observation feeds: each rule kind's detector, and a batch grouped by route.

The engine (:mod:`gateway.alerts.engine`) routes a reading by (channel, node) and a score by
(source, node); :func:`group_by_route` groups a batch that way in one pass, so whole groups
that cannot change anything are applied at once (:meth:`AlertEngine.observe_many`).
"""

from __future__ import annotations

import math

from gateway.alerts.config import (
    AnomalyRule,
    BatteryRule,
    DisagreementRule,
    GapRule,
    Rule,
    SilentRule,
    ThresholdRule,
)
from gateway.alerts.state import LevelDetector, SilenceDetector, WindowCounter
from gateway.events import AnomalyScore, ChannelReading, Observation

Detector = LevelDetector | WindowCounter | SilenceDetector
Route = tuple[object, str]  # (channel name or ScoreSource, node id)


def group_by_route(batch: list[Observation]) -> tuple[dict[Route, list[int]], list[int]]:
    """Indices of the readings and scores of ``batch`` per route, in order; and the indices
    of every other observation."""
    groups: dict[Route, list[int]] = {}
    rest: list[int] = []
    for i, obs in enumerate(batch):
        cls = type(obs)
        if cls is ChannelReading:
            key: Route = (obs.channel, obs.node_id)  # type: ignore[union-attr]
        elif cls is AnomalyScore:
            key = (obs.source, obs.node_id)  # type: ignore[union-attr]
        else:
            rest.append(i)
            continue
        group = groups.get(key)
        if group is None:
            groups[key] = [i]
        else:
            group.append(i)
    return groups, rest


def new_detector(cfg: Rule) -> Detector:
    if isinstance(cfg, ThresholdRule):
        if cfg.above is not None:
            on, off, above = cfg.above, cfg.above - cfg.hysteresis, True
        else:
            assert cfg.below is not None
            on, off, above = cfg.below, cfg.below + cfg.hysteresis, False
        return LevelDetector(on, off, above, round(cfg.min_duration_s * 1000))
    if isinstance(cfg, AnomalyRule):
        on = cfg.threshold
        return LevelDetector(on, on - cfg.hysteresis, True, round(cfg.min_duration_s * 1000))
    if isinstance(cfg, BatteryRule):
        on = float(cfg.below_mv)
        return LevelDetector(on, on + cfg.hysteresis_mv, False, round(cfg.min_duration_s * 1000))
    if isinstance(cfg, GapRule):
        return WindowCounter(cfg.lost, round(cfg.window_s * 1000))
    if isinstance(cfg, DisagreementRule):
        return WindowCounter(cfg.count, round(cfg.window_s * 1000))
    assert isinstance(cfg, SilentRule)
    return SilenceDetector(round(cfg.after_s * 1000))


def idle_run(values: list[float], on: float, *, above: bool) -> int:
    """How many leading ``values`` leave an idle level detector idle (none reaches ``on``;
    NaN never does)."""
    # max()/min() skip a NaN after the first value, but return NaN if it comes first.
    extreme = max(values) if above else min(values)
    if not math.isnan(extreme) and (extreme < on if above else extreme > on):
        return len(values)
    for j, v in enumerate(values):
        if v >= on if above else v <= on:
            return j
    return len(values)


def apply_quiet(
    batch: list[Observation],
    idx: list[int],
    dets: tuple[LevelDetector, ...],
    silent: list[tuple[str, SilenceDetector]],
    *,
    score: bool,
) -> int:
    """Apply the leading observations ``batch[i] for i in idx`` (one route's readings, or
    scores if ``score``) that leave the route's level detectors ``dets`` idle, in one step
    (last value, last seen for the node's idle ``silent`` detectors); return how many."""
    if len(idx) == 1:  # the usual group at many nodes: one row each, no lists to build
        return _apply_one(batch[idx[0]], dets, silent, score=score)
    values: list[float] = (
        [batch[i].score for i in idx]  # type: ignore[union-attr]
        if score
        else [batch[i].value for i in idx]  # type: ignore[union-attr]
    )
    quiet = len(values)
    for det in dets:
        if det.holding:
            return 0
        quiet = min(quiet, idle_run(values, det.on, above=det.above))
    if quiet:
        for det in dets:
            det.last_value = values[quiet - 1]
        if silent:
            latest = max(batch[i].t_ms for i in idx[:quiet])
            for _, sdet in silent:
                sdet.seen(latest)
    return quiet


def _apply_one(
    obs: Observation,
    dets: tuple[LevelDetector, ...],
    silent: list[tuple[str, SilenceDetector]],
    *,
    score: bool,
) -> int:
    """:func:`apply_quiet` for a group of one observation (1 if it was applied, else 0)."""
    value: float = obs.score if score else obs.value  # type: ignore[union-attr]
    for det in dets:
        # NaN compares false: it never reaches a threshold (as in idle_run).
        if det.holding or (value >= det.on if det.above else value <= det.on):
            return 0
    for det in dets:
        det.last_value = value
    for _, sdet in silent:
        sdet.seen(obs.t_ms)
    return 1
