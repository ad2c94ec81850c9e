"""Versioned SQLite schemas: a store is migrated in place, or refused, never recreated.

Each store (journal, alert history, outbox, forward backlog) records its schema version in
``PRAGMA user_version``. At open, :func:`open_schema` creates a new file at the current
version, upgrades an older one step by step inside one transaction, and refuses a file
written by a newer fieldgate with a :class:`StoreError` that says what to do: its data is
the site's history and must not be misread or overwritten.

Version 0 is every store as it was before versions were recorded; its tables are what
version 1 describes, so that step only records the number.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping

from gateway.errors import StoreError

Migration = Callable[[sqlite3.Connection], None]


def open_schema(
    db: sqlite3.Connection,
    store: str,
    schema: str,
    current: int,
    migrations: Mapping[int, Migration] | None = None,
) -> int:
    """Bring ``db`` to schema ``current``; returns the version the file had.

    ``migrations[v]`` turns version ``v`` into ``v + 1``; a missing step means the tables
    did not change (only the number does).
    """
    found = int(db.execute("PRAGMA user_version").fetchone()[0])
    if found > current:
        raise StoreError(
            f"{store} has schema version {found}, newer than this fieldgate's {current}: it "
            "was written by a newer release. Upgrade fieldgate, or restore a backup made by "
            "this release (fieldgate restore); the file is left as it is."
        )
    if found == current:
        db.executescript(schema)  # idempotent (IF NOT EXISTS): a table added later is created
        return found
    has_tables = db.execute(
        "SELECT count(*) FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
    ).fetchone()[0]
    if has_tables:
        # Steps use execute() only (executescript would commit half-way), all in one
        # transaction: a crash mid-migration leaves the old version, never a mix.
        db.execute("BEGIN IMMEDIATE")
        try:
            for version in range(found, current):
                step = (migrations or {}).get(version)
                if step is not None:
                    step(db)
            db.execute(f"PRAGMA user_version = {int(current)}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    db.executescript(schema)
    db.execute(f"PRAGMA user_version = {int(current)}")
    return found
