"""Forged or corrupt seqs, written as the attack: they cannot move a node's acks or data.

Before: a Status claiming ``oldest_unacked_seq`` 5,295 from a node that had sent 490 made the
gateway ack seqs the node had never sent (so what it lost in transit was never resent) and
took a per-seq Python loop on the journal thread; one reading at seq 2**32-1 made every
later real reading look late.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ingest import Envelope
from gateway.protocol.messages import (
    Ack,
    Channel,
    ReadingBatch,
    Sample,
    Status,
    TimeBase,
    Transport,
)
from gateway.store.journal import Journal
from gateway.store.journal_reader import JournalReader
from gateway.store.sequence import StreamState

CHANNELS = (Channel("current", "A"),)


class Link:
    def __init__(self) -> None:
        self.acks: list[Ack] = []

    def send_ack(self, ack: Ack) -> None:
        self.acks.append(ack)


def readings(seq: int, n: int = 1, node: str = "pump-01") -> ReadingBatch:
    samples = tuple(Sample(t=1000 * (seq + i), values=(1.0,)) for i in range(n))
    return ReadingBatch(node, 7, seq, TimeBase.UPTIME_MS, CHANNELS, samples)


def status(seq: int, oldest_unacked_seq: int) -> Status:
    return Status("pump-01", 7, seq, TimeBase.UPTIME_MS, 1000 * seq, 1000 * seq, 3600, -60,
                  9000, "1.0.0", oldest_unacked_seq=oldest_unacked_seq)  # fmt: skip


def env(msg: object, link: Link) -> Envelope:
    return Envelope(msg, Transport.MQTT, 10_000_000, link)  # type: ignore[arg-type]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "j.db", max_seq_jump=1000)
    j.open()
    yield j
    j.close()


def test_a_status_claiming_far_ahead_cannot_ack_what_the_node_never_sent(
    journal: Journal,
) -> None:
    link = Link()
    journal.commit([env(readings(1, n=480), link)])  # seqs 1..480; 481..489 lost in transit
    result = journal.commit([env(status(490, oldest_unacked_seq=5_295), link)])
    # Acked up to what was seen (the status itself), not to 5,294: nothing the node may
    # still resend is written off, and the "gap" is only the nine seqs really missing.
    assert result.acks[-1][1] == Ack("pump-01", 7, 490)
    assert result.lost == 9


def test_giving_up_costs_nothing_for_a_huge_claim() -> None:
    state = StreamState("n", 1)
    state.commit(1, 10)
    state.commit(15, 15)  # 11..14 still missing
    assert state.give_up_below(2**32 - 1) == 4
    assert (state.acked, state.lost, state.ahead) == (15, 4, set())


def test_a_seq_far_past_the_stream_is_refused_and_real_data_flows_on(
    journal: Journal, tmp_path: Path
) -> None:
    link = Link()
    journal.commit([env(readings(1, n=10), link)])
    forged = journal.commit([env(readings(2**32 - 1), link)])
    assert forged.seq_jumps == {"pump-01": 1}
    assert forged.new_counts == [0]  # the scoring pipeline skips it
    assert forged.acks == []
    real = journal.commit([env(readings(11, n=5), link)])
    assert real.new_counts == [5]
    assert real.acks[-1][1] == Ack("pump-01", 7, 15)
    reader = JournalReader(tmp_path / "j.db")
    try:
        assert max(seq for _, _, seq in reader.reading_keys()) == 15
    finally:
        reader.close()


def test_a_jump_within_the_window_is_a_gap_not_an_attack(journal: Journal) -> None:
    link = Link()
    journal.commit([env(readings(1, n=10), link)])
    result = journal.commit([env(readings(900), link)])  # 11..899 lost on the node
    assert result.seq_jumps == {}
    assert result.new_counts == [1]


def test_the_first_message_of_a_boot_may_start_anywhere(journal: Journal) -> None:
    result = journal.commit([env(readings(123_456_789), Link())])
    assert result.new_counts == [1]
