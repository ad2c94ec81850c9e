"""Read-only queries on the journal, on their own connection (dashboard, pipeline, tools)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.protocol.messages import Transport
from gateway.store.journal_schema import size_bytes


@dataclass(frozen=True, slots=True)
class NodeRow:
    node_id: str
    transport: str
    first_seen_ms: int
    last_seen_ms: int
    boot_id: int
    reboots: int
    rssi_dbm: int | None
    battery_mv: int | None
    free_ram_bytes: int | None
    firmware_version: str | None
    model: list[dict[str, object]]
    clock_skewed: bool
    received: int
    duplicates: int
    lost: int
    pending_gap: int

    @property
    def completeness(self) -> float:
        """Share of the node's messages that reached the journal (1.0 = nothing lost)."""
        expected = self.received + self.lost
        return self.received / expected if expected else 1.0


class JournalReader:
    """Read-only queries for the dashboard, the pipeline and tests (own connection)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def close(self) -> None:
        self._db.close()

    def nodes(self) -> list[NodeRow]:
        rows = self._db.execute(
            "SELECT n.node_id, n.transport, n.first_seen_ms, n.last_seen_ms, n.boot_id, n.reboots,"
            " n.rssi_dbm, n.battery_mv, n.free_ram_bytes, n.firmware_version, n.model,"
            " n.clock_skewed, coalesce(sum(s.received), 0), coalesce(sum(s.duplicates), 0),"
            " coalesce(sum(s.lost), 0), coalesce(sum(CASE WHEN s.boot_id = n.boot_id"
            " THEN s.highest_seen - s.acked ELSE 0 END), 0)"
            " FROM nodes n LEFT JOIN streams s ON s.node_id = n.node_id"
            " GROUP BY n.node_id ORDER BY n.node_id"
        ).fetchall()
        return [
            NodeRow(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
                json.loads(r[10]) if r[10] else [], bool(r[11]), r[12], r[13], r[14], r[15],
            )
            for r in rows
        ]  # fmt: skip

    def reading_keys(self) -> list[tuple[str, int, int]]:
        """Every stored reading's identity, for exactly-once checks."""
        return self._db.execute("SELECT node_id, boot_id, seq FROM readings").fetchall()

    def count_readings(self) -> int:
        (n,) = self._db.execute("SELECT count(*) FROM readings").fetchone()
        return int(n)

    def evictions(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT kind, count FROM evictions").fetchall())

    def size_bytes(self) -> int:
        return size_bytes(self._db)

    def transports(self) -> dict[str, Transport]:
        rows = self._db.execute("SELECT node_id, transport FROM nodes")
        return {n: Transport(t) for n, t in rows}
