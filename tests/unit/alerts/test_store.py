"""Alert history is durable, ordered, never evicted, and survives a gateway restart."""

from __future__ import annotations

from pathlib import Path

from gateway.alerts.config import AlertsConfig, load_alerts_config
from gateway.alerts.engine import AlertEngine
from gateway.events import AlertEventKind, AlertState, ChannelReading, GapObserved
from gateway.ingest import Envelope
from gateway.protocol.messages import Channel, ReadingBatch, Sample, TimeBase, Transport
from gateway.store.alerts import AlertStore, alerts_path_for
from gateway.store.journal import Journal

S = 1000
RULES = {
    "hi": {"kind": "threshold", "channel": "current", "above": 10.0, "hysteresis": 1.0},
    "gaps": {"kind": "gap", "lost": 5, "window_s": 60},
}


def config(**section: object) -> AlertsConfig:
    return load_alerts_config({"use_default_rules": False, "rules": RULES, **section})


def hi(t_s: float, value: float, node: str = "pump-1") -> ChannelReading:
    return ChannelReading(node, int(t_s * S), "current", value)


def test_after_a_restart_open_alerts_and_acknowledgements_are_back_and_dedupe_holds(
    tmp_path: Path,
) -> None:
    path = tmp_path / "alerts.db"
    with AlertStore(path) as store:
        eng = AlertEngine(config(), store)
        (raised,) = eng.observe(hi(0, 12))
        eng.acknowledge(raised.alert.alert_id, "ana", "on it", 5 * S)
        eng.observe(hi(1, 12, node="pump-2"))
        before = eng.open_alerts()

    with AlertStore(path) as store:
        eng = AlertEngine(config(), store)
        assert eng.open_alerts() == before
        assert before[0].acked_by == "ana"
        # Still over the threshold after the restart: the same alert, not a second one.
        assert eng.observe(hi(10, 13)) == []
        assert eng.observe(hi(10, 13, node="pump-2")) == []
        # Back to normal: the reloaded alert clears.
        (cleared,) = eng.observe(hi(11, 2))
        assert cleared.alert.alert_id == raised.alert.alert_id
        assert cleared.alert.ack_comment == "on it"
        # Numbering continues where it was, so ids never repeat.
        (again,) = eng.observe(hi(12, 12))
        assert again.alert.alert_id == "hi:pump-1:2"


def test_renotification_timers_and_counts_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    with AlertStore(path) as store:
        eng = AlertEngine(config(renotify_interval_s=60), store)
        eng.observe(hi(0, 12))
        assert [e.event_id for e in eng.tick(60 * S)] == ["hi:pump-1:1:renotified:1"]
    with AlertStore(path) as store:
        eng = AlertEngine(config(renotify_interval_s=60), store)
        assert eng.tick(119 * S) == []
        assert [e.event_id for e in eng.tick(120 * S)] == ["hi:pump-1:1:renotified:2"]


def test_a_reloaded_gap_alert_is_held_a_full_window_before_it_may_clear(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    with AlertStore(path) as store:
        assert AlertEngine(config(), store).observe(GapObserved("pump-1", 0, 7)) != []
    with AlertStore(path) as store:
        eng = AlertEngine(config(renotify_interval_s=0), store)
        assert eng.tick(1000 * S) == []
        assert eng.tick(1059 * S) == []
        assert [e.kind for e in eng.tick(1060 * S)] == [AlertEventKind.CLEARED]


def test_an_open_alert_whose_rule_was_removed_is_cleared_on_the_first_tick(
    tmp_path: Path,
) -> None:
    path = tmp_path / "alerts.db"
    with AlertStore(path) as store:
        AlertEngine(config(), store).observe(hi(0, 12))
    with AlertStore(path) as store:
        eng = AlertEngine(AlertsConfig(use_default_rules=False), store)
        (cleared,) = eng.tick(5 * S)
        assert cleared.alert.state is AlertState.CLEARED
        assert "no longer configured" in cleared.alert.message


def test_history_is_in_engine_order_and_events_after_is_a_resumable_cursor(
    tmp_path: Path,
) -> None:
    with AlertStore(tmp_path / "alerts.db") as store:
        eng = AlertEngine(config(), store)
        made = []
        for t, v in [(0, 12), (1, 0), (2, 12), (3, 0)]:
            made += eng.observe(hi(t, v))
        made += eng.observe(hi(4, 12, node="pump-2"))
        assert eng.history() == made
        assert eng.history(node_id="pump-2") == made[-1:]
        assert eng.history(since_ms=2 * S, limit=2) == made[3:5]
        first = store.events_after(0, limit=2)
        assert [e for _, e in first] == made[:2]
        rest = store.events_after(first[-1][0])
        assert [e for _, e in rest] == made[2:]
        assert store.get("hi:pump-1:2") == made[3].alert
        assert [a.alert_id for a in store.alerts(state=AlertState.CLEARED)] == [
            "hi:pump-1:2",
            "hi:pump-1:1",
        ]


def test_recording_the_same_event_twice_stores_it_once(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "alerts.db") as store:
        events = AlertEngine(config(), store).observe(hi(0, 12))
        store.record(events)
        assert store.count_events() == 1


def test_the_journal_raw_budget_never_evicts_alert_history(tmp_path: Path) -> None:
    journal_path = tmp_path / "journal.db"
    journal = Journal(journal_path, synchronous="NORMAL")
    journal.open()
    channels = (Channel("current", "A"),)
    for seq in range(1, 4001, 200):
        samples = tuple(Sample(t=i, values=(float(i),)) for i in range(200))
        batch = ReadingBatch("pump-1", 1, seq, TimeBase.UPTIME_MS, channels, samples)
        journal.commit([Envelope(batch, Transport.SERIAL, 1_000, None)])
    with AlertStore(alerts_path_for(journal_path)) as store:
        eng = AlertEngine(config(), store)
        for t in range(50):
            eng.observe(hi(t, 12 if t % 2 == 0 else 0))
        events = store.count_events()
        assert journal.enforce_budget(1, chunk_rows=1000) > 0
        assert store.count_events() == events == 50
    journal.close()
    assert alerts_path_for(journal_path) == tmp_path / "alerts.db"
