"""The backlog's storage faults: one alert per episode whatever the number of failing sites,
cleared when every site writes again; bugs are not taken for disk faults; and a failed write
surfaces its own cause. The faults are real SQLite errors: a database capped with
``PRAGMA max_page_count`` answers SQLITE_FULL exactly as a full disk does (the full-disk
test on a real tmpfs is tests/integration/forward/test_disk_full.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.events import AlertEvent, AlertEventKind
from gateway.forward.backlog import Backlog
from gateway.forward.points import SUMMARY, point
from gateway.forward.storage import StorageFaults, rollback
from gateway.store.faults import is_storage_fault


def _disk_full(tmp_path: Path) -> sqlite3.OperationalError:
    db = sqlite3.connect(tmp_path / "capped.db", isolation_level=None)
    db.execute("CREATE TABLE t (b BLOB)")
    db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(sqlite3.OperationalError) as caught:
        db.execute("INSERT INTO t VALUES (zeroblob(100000))")
    db.close()
    return caught.value


def test_one_alert_per_episode_cleared_when_every_site_writes_again(tmp_path: Path) -> None:
    events: list[AlertEvent] = []
    faults = StorageFaults(tmp_path / "forward.db", events.append, lambda: 1, retry_first_s=0.01)
    full = _disk_full(tmp_path)
    assert faults.failed("summarise", full) is not None
    assert faults.failed("summarise", full) is not None  # retried: still one alert
    assert faults.failed("checkpoint", full) is not None
    assert [e.kind for e in events] == [AlertEventKind.RAISED]
    assert events[0].alert.rule == "forward_storage"
    assert events[0].alert.node_id == "gateway"
    assert "full" in events[0].alert.message
    assert not faults.due("summarise")  # backing off
    faults.ok("summarise")
    assert faults.fault is not None  # the checkpoint still cannot be written
    assert [e.kind for e in events] == [AlertEventKind.RAISED]
    faults.ok("checkpoint")
    assert faults.fault is None
    assert faults.due("summarise")
    assert [e.kind for e in events] == [AlertEventKind.RAISED, AlertEventKind.CLEARED]


def test_a_bug_is_not_a_disk_fault(tmp_path: Path) -> None:
    events: list[AlertEvent] = []
    faults = StorageFaults(tmp_path / "forward.db", events.append, lambda: 1)
    assert faults.failed("summarise", sqlite3.OperationalError("no such table: points")) is None
    assert faults.failed("summarise", ValueError("bad point")) is None
    assert events == []
    assert faults.fault is None


def test_a_failed_enqueue_raises_its_cause_and_stores_nothing(tmp_path: Path) -> None:
    backlog = Backlog(tmp_path / "forward.db").open()
    db = backlog._require()  # noqa: SLF001 - cap its own connection: a real SQLITE_FULL
    db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0]}")
    tags = {"site": "s", "node": "n1", "channel": "c", "unit": "A", "interval": "60s"}
    many = [point(SUMMARY, tags, {"count": i, "mean": 1.0}, 1_700_000_000_000 + i) for i in range(5000)]  # fmt: skip
    with pytest.raises(sqlite3.Error) as caught:
        backlog.enqueue(many, {"cursor_id": 99})
    assert is_storage_fault(caught.value), caught.value  # not "cannot rollback"
    assert not db.in_transaction
    assert backlog.load_state() == {}
    assert backlog.stats().total_points == 0
    rollback(db)  # nothing to undo: no error either
    backlog.close()
