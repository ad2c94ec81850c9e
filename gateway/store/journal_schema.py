"""The journal's SQLite schema: one row per reading, per node stream, per duplicate count.

Kept apart from :mod:`gateway.store.journal` so the code that writes and the tables it
writes can each be read on their own; readers of the file (the dashboard, tests) see the
same tables.
"""

from __future__ import annotations

import sqlite3

from gateway.store.schema_version import Migration

# docs: gateway/store/schema_version.py; 1 = the tables below without streams.offset_ms
# (0: the same, unnumbered); 2 = streams.offset_ms added (see MIGRATIONS).
JOURNAL_SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS channel_sets (
    id INTEGER PRIMARY KEY,
    spec TEXT NOT NULL UNIQUE               -- "name:unit,name:unit"
);
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,                 -- insertion order: retention evicts lowest first
    node_id TEXT NOT NULL,
    boot_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,                 -- wall time (node time mapped to it)
    rx_ms INTEGER NOT NULL,
    transport TEXT NOT NULL,
    channel_set INTEGER NOT NULL REFERENCES channel_sets(id),
    vals BLOB NOT NULL,                     -- little-endian float64 per channel
    UNIQUE (node_id, boot_id, seq)
);
CREATE TABLE IF NOT EXISTS inferences (
    node_id TEXT NOT NULL,
    boot_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    rx_ms INTEGER NOT NULL,
    transport TEXT NOT NULL,
    model_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    model_hash BLOB NOT NULL,
    score REAL NOT NULL,
    label INTEGER NOT NULL,
    latency_us INTEGER NOT NULL,
    PRIMARY KEY (node_id, boot_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS statuses (
    node_id TEXT NOT NULL,
    boot_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    rx_ms INTEGER NOT NULL,
    transport TEXT NOT NULL,
    body TEXT NOT NULL,                     -- JSON of the Status fields
    PRIMARY KEY (node_id, boot_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS streams (
    node_id TEXT NOT NULL,
    boot_id INTEGER NOT NULL,
    acked INTEGER NOT NULL,
    highest_seen INTEGER NOT NULL,
    received INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    lost INTEGER NOT NULL,
    first_rx_ms INTEGER NOT NULL,
    offset_ms INTEGER,                      -- uptime->wall offset estimate (NULL: none yet)
    PRIMARY KEY (node_id, boot_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY,
    transport TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    boot_id INTEGER NOT NULL,
    reboots INTEGER NOT NULL DEFAULT 0,
    rssi_dbm INTEGER,
    battery_mv INTEGER,
    free_ram_bytes INTEGER,
    firmware_version TEXT,
    model TEXT,                              -- JSON list of slots
    clock_skewed INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evictions (
    kind TEXT PRIMARY KEY,
    count INTEGER NOT NULL
) WITHOUT ROWID;
"""


def _add_stream_offsets(db: sqlite3.Connection) -> None:
    """1 -> 2: the streams' clock offsets, so a restart maps node time as before it.

    Only added when missing: a salvaged journal (``fieldgate journal recover``) is written
    with the current tables and no version number.
    """
    columns = {row[1] for row in db.execute("PRAGMA table_info(streams)")}
    if "offset_ms" not in columns:
        db.execute("ALTER TABLE streams ADD COLUMN offset_ms INTEGER")


MIGRATIONS: dict[int, Migration] = {1: _add_stream_offsets}


def size_bytes(db: sqlite3.Connection) -> int:
    """Bytes the database's used pages take (free pages excluded)."""
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    (free,) = db.execute("PRAGMA freelist_count").fetchone()
    (size,) = db.execute("PRAGMA page_size").fetchone()
    return int((pages - free) * size)
