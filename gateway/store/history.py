"""Read-only history of one node from the journal: its recent readings, node-model scores
and status reports, for the dashboard and its JSON API.

A separate read-only connection (``mode=ro``), like :class:`~gateway.store.journal.JournalReader`:
it never takes the writer's lock, so a page view cannot delay a group commit. Queries walk
the ``(node_id, boot_id, seq)`` primary-key indexes backwards, so the cost of "the last N of
this node" does not grow with the size of the journal.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.store.journal import unpack_values


@dataclass(frozen=True, slots=True)
class ReadingRow:
    ts_ms: int
    values: dict[str, float]  # channel name -> value


@dataclass(frozen=True, slots=True)
class InferenceRow:
    ts_ms: int
    model_id: str
    model_version: str
    score: float
    label: int
    latency_us: int


@dataclass(frozen=True, slots=True)
class StatusRow:
    ts_ms: int
    body: dict[str, object]


class HistoryReader:
    """Recent history per node; one connection, usable from one thread at a time."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._channel_sets: dict[int, tuple[str, ...]] = {}

    def close(self) -> None:
        self._db.close()

    def _channels(self, set_id: int) -> tuple[str, ...]:
        names = self._channel_sets.get(set_id)
        if names is None:
            row = self._db.execute("SELECT spec FROM channel_sets WHERE id=?", (set_id,)).fetchone()
            spec = str(row[0]) if row else ""
            names = tuple(part.split(":", 1)[0] for part in spec.split(",") if part)
            self._channel_sets[set_id] = names
        return names

    def readings(self, node_id: str, *, since_ms: int = 0, limit: int = 600) -> list[ReadingRow]:
        """The node's last ``limit`` readings newer than ``since_ms``, oldest first."""
        rows = self._db.execute(
            "SELECT ts_ms, channel_set, vals FROM readings WHERE node_id=?"
            " ORDER BY boot_id DESC, seq DESC LIMIT ?",
            (node_id, limit),
        ).fetchall()
        out = [
            ReadingRow(
                int(ts), dict(zip(self._channels(int(cs)), unpack_values(vals), strict=False))
            )
            for ts, cs, vals in rows
            if ts > since_ms
        ]
        out.sort(key=lambda r: r.ts_ms)
        return out

    def inferences(
        self, node_id: str, *, since_ms: int = 0, limit: int = 600
    ) -> list[InferenceRow]:
        """The node's own model results (last ``limit`` newer than ``since_ms``), oldest first."""
        rows = self._db.execute(
            "SELECT ts_ms, model_id, model_version, score, label, latency_us FROM inferences"
            " WHERE node_id=? ORDER BY boot_id DESC, seq DESC LIMIT ?",
            (node_id, limit),
        ).fetchall()
        out = [
            InferenceRow(int(r[0]), str(r[1]), str(r[2]), float(r[3]), int(r[4]), int(r[5]))
            for r in rows
            if r[0] > since_ms
        ]
        out.sort(key=lambda r: r.ts_ms)
        return out

    def statuses(self, node_id: str, *, limit: int = 20) -> list[StatusRow]:
        """The node's last ``limit`` status reports, newest first."""
        rows = self._db.execute(
            "SELECT ts_ms, body FROM statuses WHERE node_id=? ORDER BY boot_id DESC, seq DESC"
            " LIMIT ?",
            (node_id, limit),
        ).fetchall()
        return [StatusRow(int(ts), json.loads(body)) for ts, body in rows]
