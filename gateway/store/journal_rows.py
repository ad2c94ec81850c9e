"""Readings rows for the journal's ``readings`` table: packing, and multi-row INSERTs.

Rows go in as multi-row ``INSERT OR IGNORE`` statements of up to :data:`ROWS_PER_INSERT`
rows: one statement step for a whole batch, where a statement per message or an
``executemany`` step per row would give up the GIL and take it back every time (and the
event loop waits for it each time it is given back).

:class:`PendingRows` holds the rows of a commit that the journal knows are new (their seqs
lie above everything their stream has committed), so that the rows of many messages go in
together. Only a per-message statement can say how many of *its* rows were duplicates;
pending rows need no such answer, and if the file ever disagrees (fewer rows inserted than
sent) :class:`NotAllNew` says so and the journal commits the messages one by one instead.
"""

from __future__ import annotations

import functools
import sqlite3
import struct
from collections.abc import Callable
from typing import Final

INSERT_READING: Final = (
    "INSERT OR IGNORE INTO readings"
    " (node_id, boot_id, seq, ts_ms, rx_ms, transport, channel_set, vals)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
COLUMNS: Final = 8
ROWS_PER_INSERT: Final = 256


@functools.cache
def _insert_rows(n: int) -> str:
    """The INSERT statement for ``n`` rows (SQLite keeps the prepared form in its cache)."""
    return INSERT_READING + ", (?, ?, ?, ?, ?, ?, ?, ?)" * (n - 1)


@functools.cache
def packer(n_values: int) -> Callable[..., bytes]:
    """``pack(*values)`` for rows of ``n_values`` channels: little-endian float64s."""
    return struct.Struct(f"<{n_values}d").pack


def insert(db: sqlite3.Connection, params: list[object]) -> int:
    """Insert rows given as flat ``params`` (:data:`COLUMNS` per row); how many were new."""
    step = COLUMNS * ROWS_PER_INSERT
    if len(params) <= step:
        return int(db.execute(_insert_rows(len(params) // COLUMNS), params).rowcount)
    new = 0
    for start in range(0, len(params), step):
        chunk = params[start : start + step]
        new += db.execute(_insert_rows(len(chunk) // COLUMNS), chunk).rowcount
    return new


class NotAllNew(Exception):
    """Rows sent as certainly new were not all inserted: stream state and file disagree."""


class PendingRows:
    """Rows of one transaction known to be new, written together by :meth:`flush`."""

    def __init__(self) -> None:
        self._params: list[object] = []
        self._rows = 0

    def add(self, params: list[object]) -> None:
        self._params += params
        self._rows += len(params) // COLUMNS

    def flush(self, db: sqlite3.Connection) -> None:
        """Insert what is pending; :class:`NotAllNew` if any row was already there."""
        if not self._rows:
            return
        params, rows = self._params, self._rows
        self.clear()
        inserted = insert(db, params)
        if inserted != rows:
            raise NotAllNew(f"{rows - inserted} of {rows} readings thought new were stored already")

    def clear(self) -> None:
        self._params, self._rows = [], 0
