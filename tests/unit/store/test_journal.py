"""The journal stores each node message once and only acknowledges what it committed."""

from __future__ import annotations

import contextlib
import sqlite3
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
from gateway.store.journal import Journal, unpack_values
from gateway.store.journal_reader import JournalReader

CHANNELS = (Channel("current", "A"), Channel("pressure", "bar"))


class RecordingLink:
    def __init__(self) -> None:
        self.acks: list[Ack] = []

    def send_ack(self, ack: Ack) -> None:
        self.acks.append(ack)


def batch(seq: int, n: int = 3, node: str = "pump-1", boot: int = 11) -> ReadingBatch:
    samples = tuple(Sample(t=1000 * (seq + i), values=(1.0 + i, 2.5)) for i in range(n))
    return ReadingBatch(node, boot, seq, TimeBase.UPTIME_MS, CHANNELS, samples)


def env(msg: object, link: RecordingLink | None = None, rx_ms: int = 10_000_000) -> Envelope:
    return Envelope(msg, Transport.SERIAL, rx_ms, link)  # type: ignore[arg-type]


@pytest.fixture
def journal(tmp_path: Path):  # type: ignore[no-untyped-def]
    j = Journal(tmp_path / "j.db")
    j.open()
    yield j
    j.close()


def test_duplicate_batch_is_stored_once_and_counted(journal: Journal, tmp_path: Path) -> None:
    link = RecordingLink()
    first = journal.commit([env(batch(1), link)])
    again = journal.commit([env(batch(1), link)])
    assert first.inserted["serial"] == 3
    assert again.inserted["serial"] == 0
    assert again.duplicates["serial"] == 3
    reader = JournalReader(tmp_path / "j.db")
    assert sorted(reader.reading_keys()) == [("pump-1", 11, s) for s in (1, 2, 3)]
    [node] = reader.nodes()
    assert (node.received, node.duplicates) == (3, 3)
    reader.close()


def test_ack_is_cumulative_and_stops_at_a_hole(journal: Journal) -> None:
    link = RecordingLink()
    journal.commit([env(batch(1), link)])
    journal.commit([env(batch(7), link)])  # 4..6 missing
    assert link.acks == []
    result = journal.commit([env(batch(1), link), env(batch(7), link)])
    assert [a for _, a in result.acks] == [Ack("pump-1", 11, 3)]
    result = journal.commit([env(batch(4), link)])
    assert [a for _, a in result.acks] == [Ack("pump-1", 11, 9)]


def test_state_survives_reopen_including_out_of_order_data(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    j.open()
    link = RecordingLink()
    j.commit([env(batch(1), link), env(batch(7), link)])
    j.close()
    j = Journal(tmp_path / "j.db")
    j.open()
    result = j.commit([env(batch(4), link)])
    j.close()
    assert [a for _, a in result.acks] == [Ack("pump-1", 11, 9)]


def test_reboot_counts_the_old_boots_missing_seqs_as_lost(journal: Journal, tmp_path: Path) -> None:
    link = RecordingLink()
    journal.commit([env(batch(1), link), env(batch(10), link)])  # 4..9 never arrive
    journal.commit([env(batch(1, boot=12), link)])
    [node] = JournalReader(tmp_path / "j.db").nodes()
    assert node.lost == 6
    assert node.reboots == 1
    assert node.boot_id == 12
    assert node.completeness == pytest.approx(9 / 15)


def test_status_with_evicted_buffer_turns_hole_into_gap_and_unblocks_ack(journal: Journal) -> None:
    link = RecordingLink()
    journal.commit([env(batch(1), link)])
    status = Status("pump-1", 11, 10, TimeBase.UPTIME_MS, 20_000, 20_000, 3600, -60, 9000, "1.0.0",
                    oldest_unacked_seq=8)  # fmt: skip
    result = journal.commit([env(batch(8, n=2), link), env(status, link)])
    assert result.lost == 4  # seqs 4..7 are gone for good
    assert [a for _, a in result.acks] == [Ack("pump-1", 11, 10)]


def test_uptime_timestamps_are_mapped_to_wall_time(journal: Journal, tmp_path: Path) -> None:
    journal.commit([env(batch(1, n=1), rx_ms=5_000_000)])
    with contextlib.closing(sqlite3.connect(tmp_path / "j.db")) as db:
        (ts,) = db.execute("SELECT ts_ms FROM readings").fetchone()
    assert ts == 5_000_000  # node t=1000 arrived at rx 5_000_000: offset 4_999_000


def test_a_streams_first_batch_keeps_its_samples_apart(journal: Journal, tmp_path: Path) -> None:
    """A batch of 5 samples (node t = 1000..5000) that is the first message of its boot, as
    after a gateway restart: each sample keeps its own time, the newest maps to rx."""
    journal.commit([env(batch(1, n=5), rx_ms=5_000_000)])
    with contextlib.closing(sqlite3.connect(tmp_path / "j.db")) as db:
        stamps = [ts for (ts,) in db.execute("SELECT ts_ms FROM readings ORDER BY seq")]
    assert stamps == [4_996_000, 4_997_000, 4_998_000, 4_999_000, 5_000_000]


def test_retention_evicts_oldest_raw_readings_and_counts_them(
    journal: Journal, tmp_path: Path
) -> None:
    for k in range(60):
        journal.commit([env(batch(1 + 200 * k, n=200))])
    reader = JournalReader(tmp_path / "j.db")
    before = reader.count_readings()
    evicted = journal.enforce_budget(raw_budget_bytes=200_000, chunk_rows=1000)
    assert evicted > 0
    assert reader.count_readings() == before - evicted
    assert reader.evictions() == {"raw_readings": evicted}
    with contextlib.closing(sqlite3.connect(tmp_path / "j.db")) as db:
        (oldest,) = db.execute("SELECT min(seq) FROM readings").fetchone()
    assert oldest == 1 + evicted, "the oldest readings go first"


def test_a_large_batch_overlapping_stored_seqs_stores_only_the_new_ones_exactly(
    journal: Journal, tmp_path: Path
) -> None:
    # 600 samples go in as several multi-row INSERTs; 100 of them (seqs 301..400) are stored
    # already, in the middle of one of those statements.
    link = RecordingLink()
    journal.commit([env(batch(301, n=100), link)])
    result = journal.commit([env(batch(1, n=600), link)])
    assert (result.inserted["serial"], result.duplicates["serial"]) == (500, 100)
    assert result.new_counts == [500]
    assert [a for _, a in result.acks] == [Ack("pump-1", 11, 600)]
    with contextlib.closing(sqlite3.connect(tmp_path / "j.db")) as db:
        rows = db.execute("SELECT seq, ts_ms, vals FROM readings ORDER BY seq").fetchall()
    assert [seq for seq, _, _ in rows] == list(range(1, 601))
    for seq, ts, vals in rows:
        if 301 <= seq <= 400:  # the copy stored first stays
            assert unpack_values(vals) == (1.0 + seq - 301, 2.5)
        else:
            assert unpack_values(vals) == (1.0 + seq - 1, 2.5)
            assert ts == result.wall_ms[0][seq - 1]


def test_many_messages_in_one_commit_count_copies_and_late_seqs_exactly(
    journal: Journal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # New rows of many messages go in together; a copy within the same commit, a late
    # out-of-order seq and a copy of an earlier commit must each still count right.
    link = RecordingLink()
    journal.commit([env(batch(1, n=1, node="a"), link), env(batch(3, n=1, node="a"), link)])
    result = journal.commit(
        [
            env(batch(4, n=1, node="a"), link),  # new
            env(batch(1, n=1, node="b"), link),  # new stream
            env(batch(4, n=1, node="a"), link),  # a copy of the first, same commit
            env(batch(2, n=1, node="a"), link),  # late: fills the hole
            env(batch(3, n=1, node="a"), link),  # a copy of the earlier commit
            env(batch(5, n=2, node="a"), link),  # new again
        ]
    )
    assert result.new_counts == [1, 1, 0, 1, 0, 2]
    assert "message by message" not in caplog.text  # right the first time, no second pass
    assert (result.inserted["serial"], result.duplicates["serial"]) == (5, 2)
    assert {a for _, a in result.acks} == {Ack("a", 11, 6), Ack("b", 11, 1)}
    with contextlib.closing(sqlite3.connect(tmp_path / "j.db")) as db:
        rows = db.execute("SELECT node_id, seq FROM readings ORDER BY id").fetchall()
    assert rows == [("a", 1), ("a", 3), ("a", 4), ("b", 1), ("a", 2), ("a", 5), ("a", 6)]
    [a, b] = sorted(JournalReader(tmp_path / "j.db").nodes(), key=lambda n: n.node_id)
    assert (a.received, a.duplicates, b.received) == (6, 2, 1)


def test_readings_the_stream_state_does_not_know_are_still_counted_as_duplicates(
    journal: Journal, tmp_path: Path
) -> None:
    # A row in the file that no stream state accounts for (put there behind the journal's
    # back): the batch taken for new is stored message by message and counted right.
    with contextlib.closing(sqlite3.connect(tmp_path / "j.db")) as db:
        db.execute(
            "INSERT INTO readings (node_id, boot_id, seq, ts_ms, rx_ms, transport, channel_set,"
            " vals) VALUES ('pump-9', 11, 2, 0, 0, 'serial', 1, x'')"
        )
        db.commit()
    link = RecordingLink()
    result = journal.commit([env(batch(1, n=3, node="pump-9"), link)])
    assert result.new_counts == [2]
    assert (result.inserted["serial"], result.duplicates["serial"]) == (2, 1)
    assert [a for _, a in result.acks] == [Ack("pump-9", 11, 3)]
    reader = JournalReader(tmp_path / "j.db")
    assert sorted(reader.reading_keys()) == [("pump-9", 11, s) for s in (1, 2, 3)]
    reader.close()
