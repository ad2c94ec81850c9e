"""A damaged journal: detect it at open, set it aside, salvage what can be read.

The journal is the source of truth, so a damaged one is never silently replaced: at open
the gateway runs ``PRAGMA quick_check``; a file that fails it (or an empty file where a
journal is expected) is renamed ``<name>.damaged-<UTC time>`` with its WAL, the reason is
logged and a fresh journal is started (the nodes resend what was never acknowledged).
``fieldgate journal recover`` then salvages the readable rows of the set-aside file into a
new journal, which an operator can inspect or put back.
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from gateway.errors import StoreError

_LOGGER = logging.getLogger(__name__)
_SIDE_FILES = ("-wal", "-shm")


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def hold_lock(path: Path) -> IO[bytes]:
    """Take the journal's lock for as long as the returned file stays open.

    Two gateways writing one journal would each believe their own stream state; a restore
    under a running gateway would swap the file beneath its writer. Both are refused.
    """
    lock = lock_path(path).open("ab")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StoreError(
            f"{path} is in use by another gateway (lock {lock_path(path)}); stop it first"
        ) from None
    return lock


def is_locked(path: Path) -> bool:
    lock = lock_path(path)
    if not lock.exists():
        return False
    with lock.open("ab") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def journal_problem(path: Path) -> str | None:
    """Why the journal at ``path`` cannot be trusted, or None if it passes ``quick_check``."""
    if not path.exists():
        return None
    if path.stat().st_size == 0:
        return "the file is empty (a journal never is once created)"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute("PRAGMA quick_check(5)").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return f"not a readable SQLite database ({exc})"
    found = [str(r[0]) for r in rows]
    return None if found == ["ok"] else "quick_check: " + "; ".join(found)


def set_aside(path: Path, clock: float | None = None) -> Path:
    """Rename the journal (and its WAL/SHM) out of the way; return the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock))
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    for suffix in _SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    path.rename(target)
    return target


@dataclass
class Salvage:
    source: Path
    target: Path
    rows: dict[str, int] = field(default_factory=dict)
    damaged_tables: list[str] = field(default_factory=list)
    problem_after: str | None = None


def recover(source: Path, target: Path, schema: str) -> Salvage:
    """Copy every readable row of ``source`` into a new journal at ``target``.

    Tables keyed by an integer id are read in id ranges, and a range that hits a damaged
    page is retried row by row, so one bad page costs only its own rows; other tables are
    read in key order up to the first damaged page. The source is opened read-only.
    """
    if target.exists():
        raise FileExistsError(f"{target} exists; choose another --to")
    salvage = Salvage(source, target)
    dst = sqlite3.connect(target)
    src = sqlite3.connect(f"file:{source}?mode=ro&immutable=1", uri=True)
    try:
        dst.executescript(schema)
        tables = [
            t
            for (t,) in dst.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for table in tables:
            columns = [row[1] for row in dst.execute(f'PRAGMA table_info("{table}")')]
            copy = _copy_by_id if "id" in columns else _copy_in_order
            damaged = copy(src, dst, table, len(columns))
            if damaged:
                salvage.damaged_tables.append(table)
            salvage.rows[table] = dst.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        dst.commit()
    finally:
        src.close()
        dst.close()
    salvage.problem_after = journal_problem(target)
    return salvage


def _insert(
    dst: sqlite3.Connection, table: str, width: int, rows: list[tuple[object, ...]]
) -> None:
    marks = ",".join("?" * width)
    if rows and len(rows[0]) < width:
        # A journal of an older schema: later versions only append nullable columns.
        rows = [(*row, *(None,) * (width - len(row))) for row in rows]
    dst.executemany(f'INSERT OR IGNORE INTO "{table}" VALUES ({marks})', rows)


def _copy_by_id(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, width: int) -> bool:
    try:
        top = src.execute(f'SELECT max(id) FROM "{table}"').fetchone()[0] or 0
    except sqlite3.DatabaseError:
        # The b-tree's right edge is unreadable: bound the scan by the file's page count.
        pages = src.execute("PRAGMA page_count").fetchone()[0]
        top = pages * 200
    damaged = False
    step = 512
    for low in range(0, top + 1, step):
        query = f'SELECT * FROM "{table}" WHERE id >= ? AND id < ?'
        try:
            _insert(dst, table, width, src.execute(query, (low, low + step)).fetchall())
            continue
        except sqlite3.DatabaseError:
            damaged = True
        for row_id in range(low, low + step):
            try:
                row = src.execute(f'SELECT * FROM "{table}" WHERE id = ?', (row_id,)).fetchall()
            except sqlite3.DatabaseError:
                continue
            _insert(dst, table, width, row)
    return damaged


def _copy_in_order(
    src: sqlite3.Connection, dst: sqlite3.Connection, table: str, width: int
) -> bool:
    try:
        cursor = src.execute(f'SELECT * FROM "{table}"')
        while batch := cursor.fetchmany(1000):
            _insert(dst, table, width, batch)
    except sqlite3.DatabaseError as exc:
        _LOGGER.warning("recover: %s: stopped at a damaged page: %s", table, exc)
        return True
    return False
