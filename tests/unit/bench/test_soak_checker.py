"""The soak's checker sees each kind of wrong it counts (so a clean soak means something)."""

from __future__ import annotations

from bench.soak.checker import Accounted, JournalReading, Verdict, check
from bench.soak.faults import parse_raw_line

EMITTED = {("n1", 7, s) for s in range(1, 6)}
ACKED = {("n1", 7): 5}


def journal(seqs: range = range(1, 6)) -> list[JournalReading]:
    return [JournalReading(("n1", 7, s), 1000 * s, 1000 * s + 50, float(s)) for s in seqs]


def store(seqs: range = range(1, 6)) -> dict[tuple[str, int], list[float]]:
    return {("n1", 1000 * s): [float(s)] for s in seqs}


def verdict(
    rows: list[JournalReading],
    points: dict[tuple[str, int], list[float]],
    *,
    acked: dict[tuple[str, int], int] = ACKED,
    accounted: Accounted | None = None,
    resendable: frozenset[tuple[str, int]] = frozenset(),
) -> Verdict:
    return check(
        EMITTED, acked, rows, points, accounted=accounted or Accounted(), resendable=set(resendable)
    )


def test_a_clean_run_counts_nothing_wrong() -> None:
    v = verdict(journal(), store())
    assert (v.lost, v.unexpected, v.duplicated, v.recovered) == (0, 0, 0, 0)
    assert (v.emitted, v.acknowledged, v.journal, v.store) == (5, 5, 5, 5)


def test_an_acknowledged_reading_missing_from_the_journal_is_lost() -> None:
    v = verdict(journal(range(1, 5)), store(range(1, 5)))
    assert (v.lost_journal, v.lost_store) == (1, 0)


def test_a_reading_missing_from_the_store_is_lost_unless_accounted_for() -> None:
    assert verdict(journal(), store(range(2, 6))).lost == 1
    evicted = Accounted(evicted_raw=1)
    assert verdict(journal(), store(range(2, 6)), accounted=evicted).lost == 0
    late = Accounted(journal_late=1)
    assert verdict(journal(), store(range(2, 6)), accounted=late).lost == 0


def test_readings_nobody_emitted_or_with_another_value_are_unexpected() -> None:
    invented = [*journal(), JournalReading(("n1", 7, 99), 99_000, 99_050, 9.0)]
    assert verdict(invented, store()).unexpected_journal == 1
    assert verdict(journal(), {**store(), ("n1", 3000): [3.5]}).unexpected_store == 1
    assert verdict(journal(), {**store(), ("n1", 123): [1.0]}).unexpected_store == 1


def test_a_double_is_duplicated_unless_it_was_in_flight_at_a_fault() -> None:
    doubled = {**store(), ("n1", 2000): [2.0, 2.0]}
    v = verdict(journal(), doubled)
    assert (v.duplicated, v.redelivered) == (1, 0)
    v = verdict(journal(), doubled, resendable=frozenset({("n1", 2000)}))
    assert (v.duplicated, v.redelivered) == (0, 1)


def test_unacknowledged_readings_that_arrived_anyway_are_recovered() -> None:
    v = verdict(journal(), store(), acked={("n1", 7): 3})
    assert (v.recovered, v.unacked_at_end, v.lost) == (2, 2, 0)


def test_two_readings_on_one_store_identity_are_counted_as_a_collision() -> None:
    """Readings 4 and 5 of a node on one timestamp: an overwriting store would keep one. The
    store here holds both (matched by value): a collision, not a loss; holding one is a loss."""
    same_time = [*journal(range(1, 5)), JournalReading(("n1", 7, 5), 4000, 5050, 5.0)]
    both = {**store(range(1, 4)), ("n1", 4000): [4.0, 5.0]}
    v = verdict(same_time, both)
    assert (v.collisions, v.lost, v.unexpected, v.duplicated) == (1, 0, 0, 0)
    v = verdict(same_time, store(range(1, 5)))
    assert (v.collisions, v.lost) == (1, 1)


def test_raw_lines_of_the_backlog_name_their_identity() -> None:
    line = b"fieldgate_raw,channel=current,node=pump-01,site=soak value=10.5 1700000000123"
    assert parse_raw_line(line) == ("pump-01", 1_700_000_000_123)
    assert parse_raw_line(line.replace(b"current", b"flow")) is None
    assert parse_raw_line(b"fieldgate_summary,node=x count=1i 1") is None
