"""Sequence accounting decides what a node may forget: it must never over-acknowledge."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.store.sequence import StreamState


def test_in_order_commits_advance_the_ack() -> None:
    s = StreamState("n1", 7)
    s.commit(1, 5)
    s.commit(6, 6)
    assert s.acked == 6
    assert s.pending_gap == 0


def test_out_of_order_commit_waits_for_the_hole() -> None:
    s = StreamState("n1", 7)
    s.commit(1, 2)
    s.commit(5, 6)
    assert s.acked == 2, "3 and 4 are missing: the node must keep resending them"
    assert s.pending_gap == 2
    s.commit(3, 4)
    assert s.acked == 6
    assert s.ahead == set()


def test_node_giving_up_turns_the_hole_into_a_counted_gap() -> None:
    s = StreamState("n1", 7)
    s.commit(1, 2)
    s.commit(6, 6)
    newly_lost = s.give_up_below(5)  # node evicted 3 and 4 from its buffer
    assert newly_lost == 2
    assert s.lost == 2
    assert s.acked == 4, "5 is still held by the node, so the ack stops below it"
    s.commit(5, 5)
    assert s.acked == 6


def test_reboot_closes_the_stream_and_counts_what_never_came() -> None:
    s = StreamState("n1", 7)
    s.commit(1, 3)
    s.commit(8, 10)
    assert s.close() == 4
    assert s.lost == 4
    assert s.acked == 10


@given(st.permutations(list(range(1, 41))), st.integers(0, 40))
def test_ack_never_covers_a_seq_that_was_not_committed(order: list[int], keep: int) -> None:
    s = StreamState("n", 1)
    committed: set[int] = set()
    for seq in order[:keep]:
        s.commit(seq, seq)
        committed.add(seq)
        assert set(range(1, s.acked + 1)) <= committed
    if keep == 40:
        assert s.acked == 40
