"""Per-node scoring baselines that survive a gateway restart (docs/scoring.md).

A node's baseline is the raw rows it was calibrated on, in the model's channel order. Fitting
the detector on them is deterministic, so the rows are all that is kept; whoever loads them
refits with the model then running. Each baseline is keyed by node id and by its *layout*: an
opaque text (built by :meth:`gateway.pipeline.windows.ChannelMapper.layout`) naming the model
channels and which node channel fed each. Rows are only meaningful under the layout they were
recorded with, so the consumer compares layouts before using them.

Its own small file (``baselines.db`` beside ``journal.db``, see :func:`baselines_path_for`):
written once per node calibration, read once at start, so it never competes with the
journal's group commits. Every method is called on the scoring thread; each opens its own
connection, so no connection outlives a call and none crosses threads.

A file that is not a database (or is corrupt) is logged, moved aside to
``baselines.db.corrupt`` and replaced by a fresh one on the next write: losing baselines only
costs a recalibration, so it never stops the gateway. A file that cannot be read for other
reasons (permissions, a newer schema) is logged and left alone.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_LOGGER = logging.getLogger(__name__)

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS baselines (
    node_id TEXT NOT NULL,
    layout TEXT NOT NULL,          -- model channels and the node channel feeding each (JSON)
    row_count INTEGER NOT NULL,
    column_count INTEGER NOT NULL,
    data BLOB NOT NULL,            -- row_count x column_count float64, little-endian, row-major
    model_version TEXT NOT NULL,   -- the model running when it completed (for people only)
    saved_ms INTEGER NOT NULL,
    PRIMARY KEY (node_id, layout)
) WITHOUT ROWID;
"""

_CORRUPT_CODES = frozenset({sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})


def baselines_path_for(journal_path: Path) -> Path:
    """Where the scoring baselines live for a journal at ``journal_path``."""
    return journal_path.with_name("baselines.db")


@dataclass(frozen=True, slots=True)
class StoredBaseline:
    """One node's calibration rows under one layout."""

    node_id: str
    layout: str
    rows: tuple[tuple[float, ...], ...]
    model_version: str = ""
    saved_ms: int = 0


class BaselineStore:
    """Reads and writes :class:`StoredBaseline` records in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Cleared when the file has a schema this code does not know: never overwrite it.
        self._writable = True

    def load(self) -> list[StoredBaseline]:
        """Every stored baseline; an empty list for a missing, unreadable or corrupt file."""
        if not self.path.exists():
            return []
        try:
            with self._connect() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    self._writable = False
                    _LOGGER.warning(
                        "%s has schema version %d, newer than this gateway's %d; its baselines "
                        "are not used and it is not written (nodes recalibrate)",
                        self.path, version, SCHEMA_VERSION,
                    )  # fmt: skip
                    return []
                if version == 0:
                    return []  # nothing was ever written (an empty file)
                records = conn.execute(
                    "SELECT node_id, layout, row_count, column_count, data, model_version,"
                    " saved_ms FROM baselines"
                ).fetchall()
        except sqlite3.Error as exc:
            self._unreadable(exc)
            return []
        out = []
        for record in records:
            baseline = _decode(record)
            if baseline is None:
                node_id, _, n, k, data, *_ = record
                _LOGGER.warning(
                    "%s: stored baseline in %s is damaged (%s rows x %s columns, %d bytes); "
                    "the node recalibrates",
                    node_id, self.path, n, k, len(data) if isinstance(data, bytes) else -1,
                )  # fmt: skip
                continue
            out.append(baseline)
        return out

    def save(self, baselines: Sequence[StoredBaseline]) -> bool:
        """Store ``baselines`` in one transaction (replacing the same node and layout).

        Returns False, after logging why, when they could not be written; scoring carries on.
        """
        if not baselines or not self._writable:
            return False
        now_ms = int(time.time() * 1000)
        records = []
        for b in baselines:
            data = np.asarray(b.rows, dtype="<f8")
            n, k = data.shape
            records.append(
                (b.node_id, b.layout, n, k, data.tobytes(), b.model_version, b.saved_ms or now_ms)
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                # One transaction: the schema (on first use) and every record, or nothing.
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.executemany("INSERT OR REPLACE INTO baselines VALUES (?,?,?,?,?,?,?)", records)
                conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            _LOGGER.warning(
                "%s: could not store %d baseline(s) (%s); those nodes recalibrate after a "
                "restart",
                self.path, len(records), exc,
            )  # fmt: skip
            if isinstance(exc, sqlite3.Error):
                self._move_aside_if_corrupt(exc)
            return False
        return True

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # Autocommit mode: transactions are spelled out where they are wanted.
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()

    def _unreadable(self, exc: sqlite3.Error) -> None:
        _LOGGER.warning(
            "%s cannot be read (%s); stored baselines are not used and nodes recalibrate",
            self.path, exc,
        )  # fmt: skip
        self._move_aside_if_corrupt(exc)

    def _move_aside_if_corrupt(self, exc: sqlite3.Error) -> None:
        if getattr(exc, "sqlite_errorcode", None) not in _CORRUPT_CODES:
            return
        aside = self.path.with_name(self.path.name + ".corrupt")
        try:
            self.path.replace(aside)
            # A journal left beside a garbage file would be applied to the fresh one.
            for suffix in ("-journal", "-wal", "-shm"):
                self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        except OSError as move_exc:
            _LOGGER.warning("could not move %s aside: %s", self.path, move_exc)
            return
        _LOGGER.warning("moved the unreadable %s to %s; a fresh one is started", self.path, aside)


def _decode(record: Sequence[object]) -> StoredBaseline | None:
    node_id, layout, n, k, data, model_version, saved_ms = record
    if not (
        isinstance(node_id, str)
        and isinstance(layout, str)
        and isinstance(n, int)
        and isinstance(k, int)
        and isinstance(data, bytes)
        and n > 0
        and k > 0
        and len(data) == n * k * 8
    ):
        return None
    values = np.frombuffer(data, dtype="<f8").reshape(n, k)
    if not np.isfinite(values).all():
        return None
    rows = tuple(tuple(r) for r in values.tolist())
    return StoredBaseline(
        node_id,
        layout,
        rows,
        model_version if isinstance(model_version, str) else "",
        saved_ms if isinstance(saved_ms, int) else 0,
    )
