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
from gateway.store.journal import Journal
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
