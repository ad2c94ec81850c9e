"""Properties of the detectors and the alert state machine, for any observation sequence."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.alerts.config import load_alerts_config
from gateway.alerts.engine import AlertEngine
from gateway.alerts.state import AlertBook, Timing
from gateway.events import AlertEvent, AlertEventKind, AlertState, ChannelReading, Severity

ON, HYST = 10.0, 2.0
OFF = ON - HYST

# A step: ("r", dt_ms, value) a reading, or ("t", dt_ms, 0.0) a clock tick.
values = st.one_of(
    st.floats(0, 20, allow_nan=False),
    st.sampled_from([ON, OFF, ON - 1e-9, OFF - 1e-9, 9.0]),  # the edges and the band
)
steps = st.lists(
    st.tuples(st.sampled_from(["r", "r", "t"]), st.integers(0, 1500), values), max_size=60
)
min_durations = st.sampled_from([0, 1, 500, 1000, 2500])


def make_engine(min_duration_ms: int) -> AlertEngine:
    rule = {
        "kind": "threshold",
        "channel": "v",
        "above": ON,
        "hysteresis": HYST,
        "min_duration_s": min_duration_ms / 1000,
    }
    return AlertEngine(
        load_alerts_config(
            {"use_default_rules": False, "rules": {"r": rule}, "renotify_interval_s": 0}
        )
    )


class History:
    """Checks the lifecycle invariants over everything the engine emitted."""

    def __init__(self) -> None:
        self.open: dict[str, str] = {}  # key -> alert id
        self.closed: set[str] = set()

    def add(self, events: list[AlertEvent]) -> None:
        for ev in events:
            a = ev.alert
            assert a.alert_id not in self.closed, "event for an alert after it cleared"
            if ev.kind is AlertEventKind.RAISED:
                assert a.key not in self.open, "a second open alert for one key"
                self.open[a.key] = a.alert_id
            else:
                assert self.open.get(a.key) == a.alert_id, "cleared/acked without being raised"
            if ev.kind is AlertEventKind.CLEARED:
                del self.open[a.key]
                self.closed.add(a.alert_id)


@settings(max_examples=150, deadline=None)
@given(steps=steps, min_duration_ms=min_durations)
def test_an_alert_is_open_exactly_while_the_condition_has_held_for_its_min_duration(
    steps: list[tuple[str, int, float]], min_duration_ms: int
) -> None:
    eng = make_engine(min_duration_ms)
    history = History()
    t = 0
    holding, since, active = False, 0, False  # the reference: hysteresis, then duration
    for what, dt, value in steps:
        t += dt
        if what == "r":
            history.add(eng.observe(ChannelReading("n", t, "v", value)))
            now_holds = value >= (OFF if holding else ON)
            if now_holds and not holding:
                since = t
            holding = now_holds
            if not holding:
                active = False
        else:
            history.add(eng.tick(t))
        if holding and t - since >= min_duration_ms:
            active = True
        assert (len(history.open) == 1) is active, (t, holding, since)


@settings(max_examples=100, deadline=None)
@given(
    prefix=steps,
    band=st.lists(
        st.tuples(
            st.sampled_from(["r", "t"]),
            st.integers(0, 1500),
            st.floats(OFF, ON, exclude_min=False, exclude_max=True),
        ),
        max_size=40,
    ),
    min_duration_ms=min_durations,
)
def test_values_oscillating_inside_the_hysteresis_band_never_flap(
    prefix: list[tuple[str, int, float]],
    band: list[tuple[str, int, float]],
    min_duration_ms: int,
) -> None:
    eng = make_engine(min_duration_ms)
    t = 0
    for what, dt, value in prefix:
        t += dt
        (eng.observe(ChannelReading("n", t, "v", value)) if what == "r" else eng.tick(t))
    changes: list[AlertEventKind] = []
    for what, dt, value in band:
        t += dt
        events = eng.observe(ChannelReading("n", t, "v", value)) if what == "r" else eng.tick(t)
        changes += [e.kind for e in events]
    # Inside the band the condition keeps whatever state it had: a pending one may still
    # complete its minimum duration, but nothing ever clears.
    assert AlertEventKind.CLEARED not in changes
    assert len(changes) <= 1


@dataclass
class BookModel:
    now: int = 0


ops = st.lists(
    st.one_of(
        st.tuples(st.just("raise"), st.integers(0, 2)),
        st.tuples(st.just("ack"), st.integers(0, 2)),
        st.tuples(st.just("clear"), st.integers(0, 2)),
        st.tuples(st.just("tick"), st.integers(0, 400)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(ops=ops, max_escalations=st.integers(0, 3))
def test_escalation_and_renotification_happen_only_to_unacknowledged_alerts_past_their_timeout(  # noqa: C901 - a model of the engine that replays every operation kind, kept beside its assertions
    ops: list[tuple[str, int]], max_escalations: int
) -> None:
    timing = Timing(renotify_ms=300, escalate_ms=700, max_escalations=max_escalations)
    book = AlertBook()
    history = History()
    now = 0
    base: dict[str, int] = {}  # alert id -> raise or last escalation time
    seen_ids: set[str] = set()
    for op, arg in ops:
        key_node = f"n{arg}"
        events: list[AlertEvent] = []
        if op == "raise":
            ev = book.raise_alert("r", key_node, severity=Severity.INFO, message="", value=None, at_ms=now)  # fmt: skip
            if ev is not None:
                base[ev.alert.alert_id] = now
                events.append(ev)
        elif op == "ack":
            rec = book.get(f"r:{key_node}")
            if rec is not None and rec.alert.state is AlertState.RAISED:
                events.append(book.acknowledge(rec.alert.alert_id, "op", "", now))
        elif op == "clear":
            ev = book.clear(f"r:{key_node}", now)
            if ev is not None:
                events.append(ev)
        else:
            now += arg
            before = {rec.alert.alert_id: rec.alert for rec in book}
            events = book.due(now, lambda _a: timing)
            for ev in events:
                prior = before[ev.alert.alert_id]
                assert prior.state is AlertState.RAISED, "acknowledged alerts stay quiet"
                if ev.kind is AlertEventKind.ESCALATED:
                    assert now - base[prior.alert_id] >= timing.escalate_ms
                    assert ev.alert.escalations == prior.escalations + 1 <= max_escalations
                    assert ev.alert.severity == min(prior.severity + 1, Severity.CRITICAL)
                    base[prior.alert_id] = now
                else:
                    assert ev.kind is AlertEventKind.RENOTIFIED
            # Nothing overdue was left out: every unacked alert past its timeout escalated.
            for rec in book:
                a = rec.alert
                if a.state is AlertState.RAISED and a.escalations < max_escalations:
                    assert now - base[a.alert_id] < timing.escalate_ms
        history.add(events)
        for ev in events:
            assert ev.event_id not in seen_ids
            seen_ids.add(ev.event_id)
    assert len(book) == len(history.open)
