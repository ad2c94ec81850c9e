"""Reading the journal's committed readings in id order, read-only (its own connection)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.forward.summarise import JournalRow
from gateway.store.journal import unpack_values


class JournalTail:
    """Not thread-safe: the forwarder's executor thread owns it."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._channel_sets: dict[int, tuple[tuple[str, str], ...]] = {}

    def close(self) -> None:
        self._db.close()

    def _channels(self, cid: int) -> tuple[tuple[str, str], ...]:
        found = self._channel_sets.get(cid)
        if found is None:
            (spec,) = self._db.execute(
                "SELECT spec FROM channel_sets WHERE id=?", (cid,)
            ).fetchone()
            found = tuple(tuple(c.rsplit(":", 1)) for c in spec.split(",") if c)
            self._channel_sets[cid] = found
        return found

    def readings_after(self, after_id: int, limit: int = 50_000) -> list[JournalRow]:
        rows = self._db.execute(
            "SELECT id, node_id, ts_ms, channel_set, vals FROM readings WHERE id > ?"
            " ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        return [
            JournalRow(rid, node, ts, self._channels(cid), unpack_values(vals))
            for rid, node, ts, cid, vals in rows
        ]

    def first_id(self) -> int | None:
        (first,) = self._db.execute("SELECT min(id) FROM readings").fetchone()
        return first

    def stream_totals(self) -> dict[str, tuple[int, int, int]]:
        """Per node: (received, duplicates, lost) over all its boots."""
        rows = self._db.execute(
            "SELECT node_id, sum(received), sum(duplicates), sum(lost) FROM streams GROUP BY node_id"
        )
        return {n: (int(r), int(d), int(lo)) for n, r, d, lo in rows}
