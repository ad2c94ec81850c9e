"""Every store migrates a file from the previous release in place and refuses a newer one.

Version 0 is each store as released before versions were recorded (the same tables, no
number): it must open with its rows intact and come out at version 1. A file stamped by a
newer fieldgate must be refused with instructions, and left untouched.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.forward.backlog import SCHEMA as BACKLOG_SCHEMA
from gateway.forward.backlog import Backlog
from gateway.outputs.outbox import SCHEMA as OUTBOX_SCHEMA
from gateway.outputs.outbox import OutboxStore
from gateway.store.alerts import SCHEMA as ALERTS_SCHEMA
from gateway.store.alerts import AlertStore
from gateway.store.journal import Journal
from gateway.store.journal_schema import SCHEMA as JOURNAL_SCHEMA


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
    pytest.param(JOURNAL_SCHEMA, open_journal, "channel_sets", id="journal"),
    pytest.param(ALERTS_SCHEMA, open_alerts, None, id="alerts"),
    pytest.param(OUTBOX_SCHEMA, open_outbox, None, id="outbox"),
    pytest.param(BACKLOG_SCHEMA, open_backlog, None, id="forward-backlog"),
]


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


@pytest.mark.parametrize(("schema", "opener", "probe"), STORES)
def test_a_store_from_the_previous_release_is_migrated_in_place(
    tmp_path: Path, schema: str, opener: Callable[[Path], Callable[[], None]], probe: str | None
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
    assert version(path) == 1
    if probe is not None:
        db = sqlite3.connect(path)
        assert db.execute(f"SELECT spec FROM {probe}").fetchall() == [("current:A",)]
        db.close()


@pytest.mark.parametrize(("schema", "opener", "probe"), STORES)
def test_a_store_from_a_newer_release_is_refused_and_left_alone(
    tmp_path: Path, schema: str, opener: Callable[[Path], Callable[[], None]], probe: str | None
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


@pytest.mark.parametrize(("schema", "opener", "probe"), STORES)
def test_a_new_store_starts_at_the_current_version(
    tmp_path: Path, schema: str, opener: Callable[[Path], Callable[[], None]], probe: str | None
) -> None:
    opener(tmp_path / "new.db")()
    assert version(tmp_path / "new.db") == 1
