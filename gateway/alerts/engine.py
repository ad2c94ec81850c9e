"""The alert engine: configured rules over observations, alert events out.

Pure and synchronous: no asyncio and no clock reads. Observations carry their own time
(``t_ms``); :meth:`AlertEngine.tick` is given the gateway's wall clock for everything that
happens without an observation (silent nodes, minimum-duration timers, window expiry,
re-notification, escalation, the end of a silence window). Events are recorded in the
:class:`~gateway.store.alerts.AlertStore` before they are returned.

Cost: observations are routed by kind, channel and node (the rule/node match cached); a batch
is evaluated a group at a time (:meth:`AlertEngine.observe_many`). Not thread-safe: one
caller owns an engine (the alert runner: the event loop, with the store on its own thread).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.alerts.config import (
    AlertsConfig,
    AnomalyRule,
    DisagreementRule,
    GapRule,
    Rule,
    SilenceWindow,
    ThresholdRule,
)
from gateway.alerts.routing import Detector, apply_quiet, group_by_route, new_detector
from gateway.alerts.silences import Silences, selector
from gateway.alerts.state import (
    AlertBook,
    AlertError,
    LevelDetector,
    SilenceDetector,
    Timing,
    WindowCounter,
    alert_key,
)
from gateway.alerts.text import level_message, score_note
from gateway.events import (
    Alert,
    AlertEvent,
    AnomalyScore,
    ChannelReading,
    Disagreement,
    GapObserved,
    NodeHealth,
    Observation,
    ScoreSource,
)
from gateway.store.alerts import AlertStore

_LOGGER = logging.getLogger(__name__)

# Without a store, history() answers from memory: the most recent events only.
MEMORY_HISTORY = 10_000


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    cfg: Rule
    matches: Callable[[str], bool]
    timing: Timing


class AlertEngine:
    """Evaluates the configured rules; see docs/alerts.md for the semantics of each kind."""

    def __init__(
        self, config: AlertsConfig, store: AlertStore | None = None, *, defer_record: bool = False
    ) -> None:
        """``defer_record``: events are returned unrecorded; the owner passes them to
        :meth:`record` (on the store's thread) before anyone else sees them."""
        self.config = config
        self._store = store
        self._defer = defer_record
        self._rules: dict[str, _Rule] = {}
        for name, cfg in config.effective_rules().items():
            renotify = (
                config.renotify_interval_s
                if cfg.renotify_interval_s is None
                else cfg.renotify_interval_s
            )
            escalate = (
                config.escalation_timeout_s
                if cfg.escalation_timeout_s is None
                else cfg.escalation_timeout_s
            )
            timing = Timing(round(renotify * 1000), round(escalate * 1000), config.max_escalations)
            self._rules[name] = _Rule(name, cfg, selector(cfg.nodes), timing)
        # Rules by what they look at; the per-node match is resolved once per node.
        self._by_channel: dict[str, list[_Rule]] = {}
        self._by_source: dict[ScoreSource, list[_Rule]] = {}
        self._by_kind: dict[str, list[_Rule]] = {}
        for rule in self._rules.values():
            cfg = rule.cfg
            if isinstance(cfg, ThresholdRule):
                self._by_channel.setdefault(cfg.channel, []).append(rule)
            elif isinstance(cfg, AnomalyRule):
                self._by_source.setdefault(ScoreSource(cfg.source), []).append(rule)
            else:
                self._by_kind.setdefault(cfg.kind, []).append(rule)
        self._match_cache: dict[tuple[object, str], tuple[_Rule, ...]] = {}
        # (channel or source, node) -> its level detectors (detectors are never replaced).
        self._level_cache: dict[tuple[object, str], tuple[LevelDetector, ...]] = {}
        self._silences = Silences(config.silences)

        self._detectors: dict[str, Detector] = {}
        self._pending: set[str] = set()  # level detectors waiting out their minimum duration
        self._windows: set[str] = set()  # window counters with something to expire
        self._suppressed: dict[str, tuple[_Rule, str]] = {}  # active but in a silence window
        self._silent_nodes: dict[str, list[tuple[str, SilenceDetector]]] = {}
        self._pending_raise: dict[str, tuple[float | None, str]] = {}  # value, message
        self._orphans: set[str] = set()  # reloaded open alerts whose rule is gone
        self._memory: deque[AlertEvent] = deque(maxlen=MEMORY_HISTORY)

        if store is not None:
            self._book = AlertBook(store.load_open(), store.numbers())
            self._restore()
        else:
            self._book = AlertBook()

    # -- public API ---------------------------------------------------------------------------

    def observe(self, obs: Observation) -> list[AlertEvent]:
        """Feed one observation; returns the alert events it caused (already recorded)."""
        events: list[AlertEvent] = []
        self._observe(obs, events)
        return self._emit(events)

    def observe_many(self, observations: Iterable[Observation]) -> list[AlertEvent]:
        """Like :meth:`observe` for a batch, recorded in one store transaction.

        The same events, in the same order, as one by one: readings and scores are grouped
        per (channel or source, node); a group's leading run that cannot change a detector
        (level detectors idle, no value reaching the threshold, no silent alert to clear) is
        applied in one step (last value, last seen), the rest one by one in order. Groups
        touch disjoint detectors and an idle silence detector only keeps the latest time, so
        the order between a quiet run and the rest does not matter.
        """
        batch = observations if isinstance(observations, list) else list(observations)
        events: list[AlertEvent] = []
        for i in self._quiet_groups_applied(batch):
            self._observe(batch[i], events)
        return self._emit(events)

    def _quiet_groups_applied(self, batch: list[Observation]) -> list[int]:
        """Apply the quiet groups of ``batch``; return the indices left to observe in order."""
        groups, rest = group_by_route(batch)
        if not groups:
            return rest
        # Nodes new to the engine in their order of appearance (ticks report silent nodes in
        # the order they were first seen).
        for node_id in dict.fromkeys(obs.node_id for obs in batch):
            if node_id not in self._silent_nodes:
                self._silent_for(node_id)
        for (what, node_id), idx in groups.items():
            quiet = self._apply_quiet(batch, what, node_id, idx)
            if quiet < len(idx):
                rest.extend(idx[quiet:])
        rest.sort()
        return rest

    def _apply_quiet(
        self, batch: list[Observation], what: object, node_id: str, idx: list[int]
    ) -> int:
        """Apply the group's leading observations that cannot change a detector in one step;
        return how many (the rest are observed one by one)."""
        silent = self._silent_for(node_id)
        for _, det in silent:
            if det.active:
                return 0
        dets = self._level_detectors(what, node_id)
        return apply_quiet(batch, idx, dets, silent, score=isinstance(what, ScoreSource))

    def _level_detectors(self, what: object, node_id: str) -> tuple[LevelDetector, ...]:
        """The level detectors a reading of channel ``what`` (or a score of source ``what``)
        of ``node_id`` feeds (bounded like the detectors: per rule and node)."""
        found = self._level_cache.get((what, node_id))
        if found is None:
            if isinstance(what, ScoreSource):
                rules = self._matching(what, self._by_source.get(what), node_id)
            else:
                rules = self._matching(what, self._by_channel.get(str(what)), node_id)
            dets = []
            for rule in rules:
                det = self._detector(rule, node_id)
                assert isinstance(det, LevelDetector)
                dets.append(det)
            found = self._level_cache[(what, node_id)] = tuple(dets)
        return found

    def tick(self, now_ms: int) -> list[AlertEvent]:  # noqa: C901 - one pass per kind of timer; their order decides which event comes first and stays visible in one place
        """Advance the clock: silent nodes, minimum-duration timers, window expiry, the end of
        silence windows, re-notification and escalation. Call every ``tick_interval_s``."""
        events: list[AlertEvent] = []
        for node_id, detectors in self._silent_nodes.items():
            for key, det in detectors:
                if det.poll(now_ms):
                    rule = self._rules[key.split(":", 1)[0]]
                    last = now_ms if det.last_seen_ms is None else det.last_seen_ms
                    silent_s = (now_ms - last) / 1000
                    self._activate(rule, node_id, now_ms, events, value=silent_s, message=f"no data for {silent_s:.0f} s")  # fmt: skip
        for key in list(self._pending):
            level = self._detectors[key]
            assert isinstance(level, LevelDetector)
            if level.poll(now_ms):
                self._pending.discard(key)
                rule_name, node_id = key.split(":", 1)
                rule = self._rules[rule_name]
                message = level_message(rule.cfg, level)
                self._activate(rule, node_id, now_ms, events, value=level.reported, message=message)  # fmt: skip
        for key in list(self._windows):
            counter = self._detectors[key]
            assert isinstance(counter, WindowCounter)
            change = counter.poll(now_ms)
            if counter.idle:
                self._windows.discard(key)
            if change is not None:
                rule_name, node_id = key.split(":", 1)
                rule = self._rules[rule_name]
                self._window_changed(rule, node_id, now_ms, counter, events, active=change)
        for key, (rule, node_id) in list(self._suppressed.items()):
            if not self._silences.active(node_id, rule.name, now_ms):
                del self._suppressed[key]
                self._raise(rule, node_id, now_ms, events)
        for key in list(self._orphans):
            self._orphans.discard(key)
            cleared = self._book.clear(key, now_ms, "cleared: its rule is no longer configured")
            if cleared is not None:
                events.append(cleared)
        events.extend(self._book.due(now_ms, lambda alert: self._timing(alert, now_ms)))
        return self._emit(events)

    def acknowledge(self, alert_id: str, by: str, comment: str, now_ms: int) -> AlertEvent:
        """Acknowledge an open, unacknowledged alert; stops its re-notification and escalation.

        Raises :class:`~gateway.alerts.state.AlertError` for an unknown, cleared or already
        acknowledged alert.
        """
        event = self._book.acknowledge(alert_id, by, comment, now_ms)
        self._emit([event])
        return event

    def clear(self, alert_id: str, by: str, comment: str, now_ms: int) -> AlertEvent:
        """A person closes an open alert. Its detector keeps its state: while the condition
        still holds no new alert is raised; the next one comes after it recovers and trips
        again. Raises :class:`~gateway.alerts.state.AlertError` for an unknown or cleared id."""
        rec = self._book.by_id(alert_id)
        if rec is None:
            raise AlertError(alert_id, "no open alert with this id (cleared or unknown)")
        note = f"cleared by {by}" + (f": {comment}" if comment else "")
        event = self._book.clear(rec.alert.key, now_ms, f"{rec.alert.message} ({note})")
        assert event is not None  # by_id found it open
        self._emit([event])
        return event

    def add_silence(self, window: SilenceWindow) -> None:
        """Silence nodes (and rules) for a window decided at run time; not persisted here."""
        self._silences.add(window)

    def open_alerts(self) -> list[Alert]:
        """Raised and acknowledged alerts, oldest first."""
        return sorted((rec.alert for rec in self._book), key=lambda a: (a.raised_at_ms, a.alert_id))

    def history(
        self,
        *,
        node_id: str | None = None,
        rule: str | None = None,
        since_ms: int | None = None,
        limit: int = 1000,
    ) -> list[AlertEvent]:
        """Alert events oldest first (the last ``limit`` matching); from the store if any."""
        if self._store is not None:
            return self._store.history(node_id=node_id, rule=rule, since_ms=since_ms, limit=limit)
        out = [
            ev
            for ev in self._memory
            if (node_id is None or ev.alert.node_id == node_id)
            and (rule is None or ev.alert.rule == rule)
            and (since_ms is None or ev.at_ms >= since_ms)
        ]
        return out[-limit:] if limit else []

    def track_node(self, node_id: str, last_seen_ms: int) -> None:
        """Tell the engine about a node it has not observed yet (e.g. from the journal's node
        table at start-up), so it can alert when that node stays silent."""
        for _key, det in self._silent_for(node_id):
            if det.last_seen_ms is None or last_seen_ms > det.last_seen_ms:
                det.last_seen_ms = last_seen_ms

    @property
    def rules(self) -> dict[str, Rule]:
        return {name: r.cfg for name, r in self._rules.items()}

    # -- routing ------------------------------------------------------------------------------

    def _observe(self, obs: Observation, events: list[AlertEvent]) -> None:  # noqa: C901 - the routing table of one observation to every detector kind, read top to bottom
        node_id, t_ms = obs.node_id, obs.t_ms
        for key, det in self._silent_for(node_id):
            if det.seen(t_ms) is False:
                self._deactivate(key, t_ms, events)
        if isinstance(obs, ChannelReading):
            rules = self._matching(obs.channel, self._by_channel.get(obs.channel), node_id)
            for rule in rules:
                self._level(rule, node_id, t_ms, obs.value, events)
        elif isinstance(obs, AnomalyScore):
            note = score_note(obs.channels, obs.model_version)
            for rule in self._matching(obs.source, self._by_source.get(obs.source), node_id):
                self._level(rule, node_id, t_ms, obs.score, events, note=note)
        elif isinstance(obs, NodeHealth):
            if obs.battery_mv is not None:
                for rule in self._kind("battery", node_id):
                    self._level(rule, node_id, t_ms, float(obs.battery_mv), events)
        elif isinstance(obs, GapObserved):
            for rule in self._kind("gap", node_id):
                self._window(rule, node_id, t_ms, obs.lost, events)
        elif isinstance(obs, Disagreement):
            for rule in self._kind("disagreement", node_id):
                self._window(rule, node_id, t_ms, 1, events)

    def _matching(self, what: object, rules: list[_Rule] | None, node_id: str) -> tuple[_Rule, ...]:
        if rules is None:
            return ()
        cached = self._match_cache.get((what, node_id))
        if cached is None:
            cached = tuple(r for r in rules if r.matches(node_id))
            self._match_cache[(what, node_id)] = cached
        return cached

    def _kind(self, kind: str, node_id: str) -> tuple[_Rule, ...]:
        return self._matching(kind, self._by_kind.get(kind), node_id)

    def _silent_for(self, node_id: str) -> list[tuple[str, SilenceDetector]]:
        found = self._silent_nodes.get(node_id)
        if found is None:
            found = []
            for rule in self._kind("silent", node_id):
                det = self._detector(rule, node_id)
                assert isinstance(det, SilenceDetector)
                found.append((alert_key(rule.name, node_id), det))
            self._silent_nodes[node_id] = found
        return found

    def _detector(self, rule: _Rule, node_id: str) -> Detector:
        key = alert_key(rule.name, node_id)
        det = self._detectors.get(key)
        if det is None:
            det = self._detectors[key] = new_detector(rule.cfg)
        return det

    # -- detectors to alerts -----------------------------------------------------------------

    def _level(
        self,
        rule: _Rule,
        node_id: str,
        t_ms: int,
        value: float,
        events: list[AlertEvent],
        *,
        note: str = "",
    ) -> None:
        det = self._detector(rule, node_id)
        assert isinstance(det, LevelDetector)
        change = det.update(t_ms, value, note)
        key = alert_key(rule.name, node_id)
        if det.pending:
            self._pending.add(key)
        else:
            self._pending.discard(key)
        if change is True:
            message = level_message(rule.cfg, det)
            self._activate(rule, node_id, t_ms, events, value=det.reported, message=message)
        elif change is False:
            self._deactivate(key, t_ms, events)

    def _window(
        self, rule: _Rule, node_id: str, t_ms: int, amount: int, events: list[AlertEvent]
    ) -> None:
        det = self._detector(rule, node_id)
        assert isinstance(det, WindowCounter)
        change = det.add(t_ms, amount)
        self._windows.add(alert_key(rule.name, node_id))
        if change is not None:
            self._window_changed(rule, node_id, t_ms, det, events, active=change)

    def _window_changed(
        self,
        rule: _Rule,
        node_id: str,
        t_ms: int,
        det: WindowCounter,
        events: list[AlertEvent],
        *,
        active: bool,
    ) -> None:
        if not active:
            self._deactivate(alert_key(rule.name, node_id), t_ms, events)
            return
        cfg = rule.cfg
        assert isinstance(cfg, GapRule | DisagreementRule)
        what = "messages lost" if isinstance(cfg, GapRule) else "node/gateway disagreements"
        message = f"{det.total} {what} within {cfg.window_s:g} s"
        self._activate(rule, node_id, t_ms, events, value=float(det.total), message=message)

    def _activate(
        self,
        rule: _Rule,
        node_id: str,
        t_ms: int,
        events: list[AlertEvent],
        *,
        value: float | None,
        message: str,
    ) -> None:
        key = alert_key(rule.name, node_id)
        if self._silences and self._silences.active(node_id, rule.name, t_ms):
            # Raised on the first tick after the window if the condition still holds then.
            self._suppressed[key] = (rule, node_id)
            self._pending_raise[key] = (value, message)
            return
        self._pending_raise[key] = (value, message)
        self._raise(rule, node_id, t_ms, events)

    def _raise(self, rule: _Rule, node_id: str, t_ms: int, events: list[AlertEvent]) -> None:
        key = alert_key(rule.name, node_id)
        value, message = self._pending_raise.pop(key, (None, ""))
        event = self._book.raise_alert(
            rule.name,
            node_id,
            severity=rule.cfg.severity_level,
            message=message,
            value=value,
            at_ms=t_ms,
        )
        if event is not None:
            events.append(event)

    def _deactivate(self, key: str, t_ms: int, events: list[AlertEvent]) -> None:
        self._suppressed.pop(key, None)
        self._pending_raise.pop(key, None)
        event = self._book.clear(key, t_ms)
        if event is not None:
            events.append(event)

    def _timing(self, alert: Alert, now_ms: int) -> Timing | None:
        rule = self._rules.get(alert.rule)
        if rule is None:
            return None
        if self._silences and self._silences.active(alert.node_id, alert.rule, now_ms):
            return None
        return rule.timing

    def record(self, events: list[AlertEvent]) -> None:
        """Record events the engine returned under ``defer_record``, in one transaction."""
        if self._store is not None:
            self._store.record(events)

    def _emit(self, events: list[AlertEvent]) -> list[AlertEvent]:
        if events:
            if self._store is None:
                self._memory.extend(events)
            elif not self._defer:
                self._store.record(events)
            for ev in events:
                a = ev.alert
                _LOGGER.info("%s: alert %s %s (%s)", a.node_id, a.alert_id, ev.kind, a.message)
        return events

    # -- restart -----------------------------------------------------------------------------

    def _restore(self) -> None:
        """Open alerts reloaded from the store: their detectors start active, so dedupe holds
        and the first observation that no longer meets the condition clears them."""
        for rec in self._book:
            alert = rec.alert
            rule = self._rules.get(alert.rule)
            if rule is None:
                self._orphans.add(alert.key)
                continue
            det = self._detector(rule, alert.node_id)
            if isinstance(det, LevelDetector):
                det.restore(alert.raised_at_ms)
                det.last_value = alert.value
            elif isinstance(det, WindowCounter):
                det.restore()
                self._windows.add(alert.key)
            else:
                self._silent_for(alert.node_id)
                det.restore()
