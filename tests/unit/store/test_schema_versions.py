"""Every store migrates a file from the previous release in place and refuses a newer one.

Version 0 is each store as released before versions were recorded (the same tables, no
number): it must open with its rows intact and come out at the store's current version, as
must a file of each later version (the journal's 1: streams without their clock offsets). A
file stamped by a newer fieldgate must be refused with instructions, and left untouched.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.forward.backlog import SCHEMA as BACKLOG_SCHEMA
from gateway.forward.backlog import Backlog
from gateway.ingest import Envelope
from gateway.outputs.outbox import SCHEMA as OUTBOX_SCHEMA
from gateway.outputs.outbox import OutboxStore
from gateway.protocol.messages import Channel, ReadingBatch, Sample, TimeBase, Transport
from gateway.store.alerts import SCHEMA as ALERTS_SCHEMA
from gateway.store.alerts import AlertStore
from gateway.store.journal import Journal
from gateway.store.journal_schema import JOURNAL_SCHEMA_VERSION
from gateway.store.journal_schema import SCHEMA as JOURNAL_SCHEMA
from gateway.store.recovery import recover


def open_journal(path: Path) -> Callable[[], None]:
    journal = Journal(path)
    journal.open()
    return journal.close


def open_alerts(path: Path) -> Callable[[], None]:
    return AlertStore(path).open().close


def open_outbox(path: Path) -> Callable[[], None]:
    return OutboxStore(path).close


def open_backlog(path: Path) -> Callable[[], None]:
    return Backlog(path).open().close


STORES = [
    pytest.param(
        JOURNAL_SCHEMA, open_journal, "channel_sets", JOURNAL_SCHEMA_VERSION, id="journal"
    ),
    pytest.param(ALERTS_SCHEMA, open_alerts, None, 1, id="alerts"),
    pytest.param(OUTBOX_SCHEMA, open_outbox, None, 1, id="outbox"),
    pytest.param(BACKLOG_SCHEMA, open_backlog, None, 1, id="forward-backlog"),
]
# The journal as version 1 left it: streams had no offset_ms column.
JOURNAL_SCHEMA_V1 = "\n".join(
    line for line in JOURNAL_SCHEMA.splitlines() if "offset_ms" not in line
)


def version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def tables(path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        db.close()


@pytest.mark.parametrize(("schema", "opener", "probe", "current"), STORES)
def test_a_store_from_the_previous_release_is_migrated_in_place(
    tmp_path: Path,
    schema: str,
    opener: Callable[[Path], Callable[[], None]],
    probe: str | None,
    current: int,
) -> None:
    path = tmp_path / "store.db"
    db = sqlite3.connect(path)
    db.executescript(schema)  # as the previous release left it: tables, no version
    if probe is not None:
        db.execute(f"INSERT INTO {probe} (spec) VALUES ('current:A')")
    db.commit()
    db.close()
    assert version(path) == 0
    opener(path)()
    assert version(path) == current
    if probe is not None:
        db = sqlite3.connect(path)
        assert db.execute(f"SELECT spec FROM {probe}").fetchall() == [("current:A",)]
        db.close()


@pytest.mark.parametrize(("schema", "opener", "probe", "current"), STORES)
def test_a_store_from_a_newer_release_is_refused_and_left_alone(
    tmp_path: Path,
    schema: str,
    opener: Callable[[Path], Callable[[], None]],
    probe: str | None,
    current: int,
) -> None:
    path = tmp_path / "store.db"
    db = sqlite3.connect(path)
    db.executescript(schema)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    before = tables(path)
    with pytest.raises(StoreError, match="newer than this fieldgate"):
        opener(path)()
    assert version(path) == 99
    assert tables(path) == before


@pytest.mark.parametrize(("schema", "opener", "probe", "current"), STORES)
def test_a_new_store_starts_at_the_current_version(
    tmp_path: Path,
    schema: str,
    opener: Callable[[Path], Callable[[], None]],
    probe: str | None,
    current: int,
) -> None:
    opener(tmp_path / "new.db")()
    assert version(tmp_path / "new.db") == current


def test_a_version_1_journal_gains_stream_offsets_and_keeps_its_streams(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    db = sqlite3.connect(path)
    db.executescript(JOURNAL_SCHEMA_V1)
    db.execute("INSERT INTO streams VALUES ('pump-1', 7, 3, 3, 3, 0, 0, 1000)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    journal = Journal(path)
    journal.open()
    assert version(path) == JOURNAL_SCHEMA_VERSION
    assert journal.stream("pump-1", 7) is not None
    # No offset was kept by version 1: the next message estimates one, and it is stored.
    samples = (Sample(4_000, (1.0,)),)
    batch = ReadingBatch("pump-1", 7, 4, TimeBase.UPTIME_MS, (Channel("current", "A"),), samples)
    journal.commit([Envelope(batch, Transport.SERIAL, 1_000_000)])
    journal.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT acked, first_rx_ms, offset_ms FROM streams").fetchall() == [
        (4, 1000, 996_000)
    ]
    db.close()


def test_a_version_1_journal_salvaged_by_recover_opens_as_the_current_version(
    tmp_path: Path,
) -> None:
    source = tmp_path / "old.db"
    db = sqlite3.connect(source)
    db.executescript(JOURNAL_SCHEMA_V1)
    db.execute("INSERT INTO streams VALUES ('pump-1', 7, 3, 3, 3, 0, 0, 1000)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    salvage = recover(source, tmp_path / "salvage.db", JOURNAL_SCHEMA)
    assert salvage.rows["streams"] == 1
    # The salvage has the current tables and no version number: opening it must not try to
    # add the column it already has.
    journal = Journal(tmp_path / "salvage.db")
    journal.open()
    journal.close()
    assert version(tmp_path / "salvage.db") == JOURNAL_SCHEMA_VERSION
    db = sqlite3.connect(tmp_path / "salvage.db")
    assert db.execute("SELECT node_id, acked, offset_ms FROM streams").fetchall() == [
        ("pump-1", 3, None)
    ]
    db.close()
