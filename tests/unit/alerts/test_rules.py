"""What each rule kind raises and clears, and the alert lifecycle around it, by example."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.alerts.config import load_alerts_config
from gateway.alerts.engine import AlertEngine
from gateway.alerts.state import AlertError
from gateway.events import (
    AlertEvent,
    AlertEventKind,
    AlertState,
    AnomalyScore,
    ChannelReading,
    Disagreement,
    GapObserved,
    NodeHealth,
    ScoreSource,
    Severity,
)

S = 1000  # ms per second
NODE = "pump-1"


def engine(rules: dict[str, Any], **section: Any) -> AlertEngine:
    return AlertEngine(load_alerts_config({"use_default_rules": False, "rules": rules, **section}))


def reading(t_s: float, value: float, node: str = NODE, channel: str = "current") -> ChannelReading:
    return ChannelReading(node, int(t_s * S), channel, value)


def kinds(events: list[AlertEvent]) -> list[str]:
    return [f"{e.kind.value}:{e.alert.rule}:{e.alert.node_id}" for e in events]


def feed(eng: AlertEngine, values: list[tuple[float, float]]) -> dict[float, list[str]]:
    """Readings at (t_s, value); returns the events per time that had any."""
    out = {}
    for t_s, value in values:
        events = eng.observe(reading(t_s, value))
        if events:
            out[t_s] = kinds(events)
    return out


HIGH_CURRENT = {
    "kind": "threshold",
    "channel": "current",
    "above": 10.0,
    "hysteresis": 1.0,
    "min_duration_s": 2,
}


def test_a_threshold_raises_after_min_duration_and_clears_past_the_hysteresis() -> None:
    eng = engine({"hi": HIGH_CURRENT})
    got = feed(eng, [(0, 5), (1, 10.0), (2, 10.5), (3, 9.5), (4, 9.1), (5, 8.9), (6, 9.5)])
    # Held from 1 s (>= 10); at 3 s it has held 2 s: raised. 9.5 and 9.1 are inside the band,
    # so it still holds; 8.9 is more than 1.0 below: cleared. 9.5 alone does not re-raise.
    assert got == {3: ["raised:hi:pump-1"], 5: ["cleared:hi:pump-1"]}
    assert eng.open_alerts() == []


def test_a_threshold_shorter_than_its_min_duration_never_raises() -> None:
    eng = engine({"hi": HIGH_CURRENT})
    assert feed(eng, [(0, 11), (1.9, 12), (2.0, 8), (3, 11), (4.5, 8.5)]) == {}
    assert eng.tick(10 * S) == []


def test_a_pending_threshold_raises_on_the_tick_when_no_sample_comes() -> None:
    eng = engine({"hi": HIGH_CURRENT})
    assert feed(eng, [(0, 11)]) == {}
    assert eng.tick(int(1.5 * S)) == []
    (raised,) = eng.tick(2 * S)
    assert raised.kind is AlertEventKind.RAISED
    assert raised.at_ms == 2 * S
    assert raised.alert.value == 11
    assert raised.alert.message == "current 11 >= 10"


def test_a_below_threshold_mirrors_above() -> None:
    rule = {"kind": "threshold", "channel": "current", "below": 2.0, "hysteresis": 0.5}
    eng = engine({"lo": rule})
    assert feed(eng, [(0, 3), (1, 2.0), (2, 2.4), (3, 2.6)]) == {
        1: ["raised:lo:pump-1"],
        3: ["cleared:lo:pump-1"],
    }


def test_a_threshold_looks_only_at_its_channel_and_its_nodes() -> None:
    eng = engine({"hi": {**HIGH_CURRENT, "min_duration_s": 0, "nodes": ["pump-*", "fan-9"]}})
    assert eng.observe(reading(0, 50, channel="pressure")) == []
    assert eng.observe(reading(0, 50, node="fan-1")) == []
    assert kinds(eng.observe(reading(0, 50, node="fan-9"))) == ["raised:hi:fan-9"]
    assert kinds(eng.observe(reading(0, 50, node="pump-22"))) == ["raised:hi:pump-22"]


def test_anomaly_scores_alert_per_source_and_shadow_scores_never_do() -> None:
    eng = engine(
        {
            "gw": {"kind": "anomaly", "source": "gateway", "min_duration_s": 1},
            "nd": {"kind": "anomaly", "source": "node", "min_duration_s": 0, "threshold": 2.0},
        }
    )

    def score(t_s: float, source: ScoreSource, value: float) -> list[str]:
        return kinds(eng.observe(AnomalyScore(NODE, int(t_s * S), source, value, "1.0.0")))

    assert score(0, ScoreSource.SHADOW, 9.0) == []
    assert score(0, ScoreSource.GATEWAY, 1.2) == []
    assert score(0.5, ScoreSource.GATEWAY, 0.9) == []  # inside 1.0 - 0.2 hysteresis: holds
    assert score(1.0, ScoreSource.GATEWAY, 1.1) == ["raised:gw:pump-1"]
    assert score(1.0, ScoreSource.NODE, 1.5) == []  # the node rule's threshold is 2.0
    assert score(1.5, ScoreSource.NODE, 2.0) == ["raised:nd:pump-1"]
    assert score(2.0, ScoreSource.GATEWAY, 0.79) == ["cleared:gw:pump-1"]
    assert [a.rule for a in eng.open_alerts()] == ["nd"]


def test_a_node_silent_for_too_long_raises_and_its_next_message_clears() -> None:
    eng = engine({"quiet": {"kind": "silent", "after_s": 60}})
    eng.observe(reading(0, 1.0))
    assert eng.tick(59 * S) == []
    (raised,) = eng.tick(60 * S)
    assert kinds([raised]) == ["raised:quiet:pump-1"]
    assert raised.alert.value == 60.0
    assert eng.tick(61 * S) == []  # dedupe: still the one alert
    health = NodeHealth(NODE, 70 * S, battery_mv=3700, rssi_dbm=None, free_ram_bytes=None)
    assert kinds(eng.observe(health)) == ["cleared:quiet:pump-1"]


def test_a_node_the_engine_was_told_about_but_never_heard_from_goes_silent() -> None:
    eng = engine({"quiet": {"kind": "silent", "after_s": 60}})
    eng.track_node("pump-9", 1_000)
    assert kinds(eng.tick(61 * S)) == ["raised:quiet:pump-9"]


def test_battery_low_raises_at_the_limit_and_clears_only_above_limit_plus_hysteresis() -> None:
    eng = engine({"bat": {"kind": "battery", "below_mv": 3300, "hysteresis_mv": 100}})

    def health(t_s: float, mv: int | None) -> list[str]:
        return kinds(eng.observe(NodeHealth(NODE, int(t_s * S), mv, -60, 1000)))

    assert health(0, 3500) == []
    assert health(1, 3300) == ["raised:bat:pump-1"]
    assert health(2, None) == []  # a status without a battery reading says nothing
    assert health(3, 3390) == []
    assert health(4, 3401) == ["cleared:bat:pump-1"]


def test_data_gaps_alert_when_enough_are_lost_within_the_window_and_clear_as_it_slides() -> None:
    eng = engine({"gaps": {"kind": "gap", "lost": 10, "window_s": 60}})

    def gap(t_s: float, lost: int) -> list[str]:
        return kinds(eng.observe(GapObserved(NODE, int(t_s * S), lost)))

    assert gap(0, 4) == []
    assert gap(61, 4) == []  # the first 4 slid out of the window
    assert gap(70, 6) == ["raised:gaps:pump-1"]
    assert eng.tick(120 * S) == []
    assert kinds(eng.tick(121 * S)) == ["cleared:gaps:pump-1"]
    (alert,) = eng.history(rule="gaps")[:1]
    assert alert.alert.message == "10 messages lost within 60 s"


def test_disagreements_alert_on_a_count_within_the_window() -> None:
    eng = engine({"drift": {"kind": "disagreement", "count": 3, "window_s": 600}})
    events = [
        eng.observe(Disagreement(NODE, t * S, gateway_score=1.4, node_score=0.2))
        for t in (0, 100, 200)
    ]
    assert [kinds(e) for e in events] == [[], [], ["raised:drift:pump-1"]]
    assert kinds(eng.tick(700 * S)) == ["cleared:drift:pump-1"]


def test_a_raised_unacknowledged_alert_is_renotified_then_escalated() -> None:
    eng = engine(
        {"hi": {**HIGH_CURRENT, "min_duration_s": 0}},
        renotify_interval_s=60,
        escalation_timeout_s=150,
        max_escalations=2,
    )
    (raised,) = eng.observe(reading(0, 11))
    assert raised.alert.severity is Severity.WARNING
    got = {t: eng.tick(t * S) for t in range(0, 500, 10)}
    seen = {
        t: [(e.kind.value, e.alert.severity.name, e.event_id) for e in ev]
        for t, ev in got.items()
        if ev
    }
    assert seen == {
        60: [("renotified", "WARNING", "hi:pump-1:1:renotified:1")],
        120: [("renotified", "WARNING", "hi:pump-1:1:renotified:2")],
        150: [("escalated", "CRITICAL", "hi:pump-1:1:escalated:1")],
        210: [("renotified", "CRITICAL", "hi:pump-1:1:renotified:3")],
        270: [("renotified", "CRITICAL", "hi:pump-1:1:renotified:4")],
        300: [("escalated", "CRITICAL", "hi:pump-1:1:escalated:2")],  # counted, capped at top
        360: [("renotified", "CRITICAL", "hi:pump-1:1:renotified:5")],
        420: [("renotified", "CRITICAL", "hi:pump-1:1:renotified:6")],
        480: [("renotified", "CRITICAL", "hi:pump-1:1:renotified:7")],
    }
    assert eng.open_alerts()[0].escalations == 2


def test_acknowledging_stops_renotification_and_escalation_and_clear_still_follows() -> None:
    eng = engine({"hi": {**HIGH_CURRENT, "min_duration_s": 0}}, renotify_interval_s=60)
    (raised,) = eng.observe(reading(0, 11))
    ack = eng.acknowledge(raised.alert.alert_id, "ana", "replacing the bearing", 30 * S)
    assert ack.kind is AlertEventKind.ACKNOWLEDGED
    assert (ack.alert.state, ack.alert.acked_by, ack.alert.ack_comment, ack.alert.acked_at_ms) == (
        AlertState.ACKNOWLEDGED,
        "ana",
        "replacing the bearing",
        30 * S,
    )
    assert all(eng.tick(t * S) == [] for t in range(0, 10_000, 60))
    (cleared,) = eng.observe(reading(10_001, 5))
    assert cleared.alert.state is AlertState.CLEARED
    assert cleared.alert.acked_by == "ana"


def test_acknowledging_an_unknown_cleared_or_acknowledged_alert_is_an_error() -> None:
    eng = engine({"hi": {**HIGH_CURRENT, "min_duration_s": 0}})
    with pytest.raises(AlertError):
        eng.acknowledge("hi:pump-1:1", "ana", "", 0)
    (raised,) = eng.observe(reading(0, 11))
    eng.acknowledge(raised.alert.alert_id, "ana", "", 1)
    with pytest.raises(AlertError, match="already acknowledged by ana"):
        eng.acknowledge(raised.alert.alert_id, "bob", "", 2)
    eng.observe(reading(3, 0))
    with pytest.raises(AlertError, match="cleared or unknown"):
        eng.acknowledge(raised.alert.alert_id, "bob", "", 4)


def test_a_new_occurrence_after_a_clear_is_a_new_alert_with_the_next_number() -> None:
    eng = engine({"hi": {**HIGH_CURRENT, "min_duration_s": 0}})
    ids = [e.event_id for t, v in [(0, 11), (1, 0), (2, 11)] for e in eng.observe(reading(t, v))]
    assert ids == ["hi:pump-1:1:raised:1", "hi:pump-1:1:cleared:1", "hi:pump-1:2:raised:1"]


def test_the_same_observations_give_the_same_event_ids() -> None:
    def run() -> list[str]:
        eng = engine({"hi": HIGH_CURRENT}, renotify_interval_s=5)
        out = []
        for t in range(30):
            out += [e.event_id for e in eng.observe(reading(t, 11 if t % 13 < 9 else 0))]
            out += [e.event_id for e in eng.tick(t * S + 500)]
        return out

    assert run() == run()
    assert len(set(run())) == len(run())


SILENCED = {"hi": {**HIGH_CURRENT, "min_duration_s": 0}}
# 2025-06-01 10:00 to 10:30 UTC.
WINDOW = {"start": "2025-06-01T12:00:00+02:00", "end": "2025-06-01T12:30:00+02:00"}
T0 = 1_748_772_000_000  # 2025-06-01T10:00:00Z in ms


def test_a_silence_window_suppresses_raising_and_a_condition_still_true_raises_when_it_ends() -> (
    None
):
    eng = engine(SILENCED, renotify_interval_s=0, silences=[{"nodes": [NODE], **WINDOW}])
    assert eng.observe(ChannelReading(NODE, T0 + 60 * S, "current", 12)) == []
    assert eng.observe(ChannelReading("pump-2", T0 + 60 * S, "current", 12)) != []  # not silenced
    assert eng.tick(T0 + 1799 * S) == []
    (raised,) = eng.tick(T0 + 1800 * S)
    assert kinds([raised]) == ["raised:hi:pump-1"]
    assert raised.at_ms == T0 + 1800 * S


def test_a_condition_that_ends_inside_the_silence_window_never_raises() -> None:
    eng = engine(SILENCED, silences=[{"nodes": ["pump-*"], "rules": ["hi"], **WINDOW}])
    assert eng.observe(ChannelReading(NODE, T0 + 60 * S, "current", 12)) == []
    assert eng.observe(ChannelReading(NODE, T0 + 120 * S, "current", 1)) == []
    assert eng.tick(T0 + 3600 * S) == []
    assert eng.history() == []


def test_an_open_alert_is_not_renotified_during_a_silence_window() -> None:
    eng = engine(SILENCED, renotify_interval_s=60, silences=[{"nodes": [NODE], **WINDOW}])
    eng.observe(ChannelReading(NODE, T0 - 10 * S, "current", 12))
    assert all(eng.tick(T0 + t * S) == [] for t in range(0, 1800, 30))
    assert kinds(eng.tick(T0 + 1800 * S)) == ["renotified:hi:pump-1"]


def test_a_daily_window_wraps_midnight_in_its_time_zone() -> None:
    # 22:00-06:00 Berlin (UTC+2 in June) is 20:00-04:00 UTC.
    window = {"daily": "22:00-06:00", "timezone": "Europe/Berlin"}
    eng = engine(SILENCED, silences=[window])
    day = T0 - 10 * 3600 * S  # 2025-06-01T00:00Z
    for hour_utc, silenced in [(19, False), (20, True), (23, True), (27, True), (28, False)]:
        t = day + hour_utc * 3600 * S
        node = f"n{hour_utc}"
        got = eng.observe(ChannelReading(node, t, "current", 12))
        assert (got == []) is silenced, hour_utc
