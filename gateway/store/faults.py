"""Telling a disk fault from a bug: the SQLite errors every store degrades on instead of crashing."""

from __future__ import annotations

import sqlite3

# SQLite result codes (low byte of extended codes) that mean "the disk, not the data".
_STORAGE_CODES = frozenset({10, 13, 14})  # SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN


def is_storage_fault(exc: BaseException) -> bool:
    """True for SQLITE_FULL, an I/O error or a file that cannot be opened: retry later."""
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _STORAGE_CODES
