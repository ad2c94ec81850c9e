"""Flash jobs started from the dashboard, kept in ``<data_dir>/flash-jobs.db`` (SQLite).

A job is one request by one person: flash a signed model onto some nodes, or roll some
nodes back to their previous model. It is written when it starts, and each node's result
when the job ends, so a finished job (who, what, per node: ok or failed and why) is still
listed after a page reload or a gateway restart. A job the gateway did not live to finish is
marked ``interrupted`` when the store is next opened. Only the newest ``MAX_JOBS`` are kept
(architecture invariant *Trust is earned, state is bounded*).

Plain data and blocking SQLite: the dashboard calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MAX_JOBS = 200
INTERRUPTED = "the gateway stopped before this node's result came in; start the job again"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    who TEXT NOT NULL,
    model TEXT NOT NULL,
    artifact_sha256 TEXT,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    state TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS job_nodes (
    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    node_id TEXT NOT NULL,
    transport TEXT NOT NULL,
    outcome TEXT,
    ok INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    old_version TEXT,
    new_version TEXT,
    bytes_sent INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, node_id)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class NodeResult:
    """How one node of a job ended: ``ok`` is False with ``reason`` saying what to do."""

    node_id: str
    outcome: str  # flash: firmware_tools' Outcome values; rollback: "reverted" or a failure
    ok: bool
    reason: str = ""
    old_version: str | None = None
    new_version: str | None = None
    bytes_sent: int = 0
    seconds: float = 0.0
    attempts: int = 0


@dataclass(slots=True)
class JobNode:
    """One node of a job: where it is now (``phase``, bytes) and, once known, its result."""

    node_id: str
    transport: str
    phase: str = "queued"
    bytes_done: int = 0
    bytes_total: int = 0
    result: NodeResult | None = None


@dataclass(slots=True)
class Job:
    job_id: int
    kind: str  # "flash" | "rollback"
    who: str
    model: str  # "name version (sequence n)" for flash jobs, "previous model" for rollbacks
    artifact_sha256: str | None
    started_ms: int
    finished_ms: int | None = None
    state: str = "running"  # "running" | "done" | "interrupted"
    error: str = ""  # why the whole job stopped, when it did not get to the nodes
    nodes: list[JobNode] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def ok(self) -> bool | None:
        """None while running; then True only if every node ended well."""
        if self.running:
            return None
        return not self.error and all(n.result is not None and n.result.ok for n in self.nodes)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def jobs_db_path(data_dir: Path) -> Path:
    return data_dir / "flash-jobs.db"


class JobStore:
    """Thread-safe (one lock): called from worker threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self.interrupted = self._mark_interrupted()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _mark_interrupted(self) -> int:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE job_nodes SET outcome='interrupted', ok=0, reason=? WHERE outcome IS NULL"
                " AND job_id IN (SELECT id FROM jobs WHERE state='running')",
                (INTERRUPTED,),
            )
            cur = self._db.execute(
                "UPDATE jobs SET state='interrupted', finished_ms=? WHERE state='running'",
                (_now_ms(),),
            )
            return cur.rowcount

    def create(
        self, *, kind: str, who: str, model: str, artifact_sha256: str | None,
        nodes: list[tuple[str, str]],
    ) -> Job:  # fmt: skip
        """A new running job for ``nodes`` (node id, transport); the oldest beyond MAX_JOBS go."""
        started = _now_ms()
        with self._lock, self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                "INSERT INTO jobs (kind, who, model, artifact_sha256, started_ms, state)"
                " VALUES (?, ?, ?, ?, ?, 'running')",
                (kind, who, model, artifact_sha256, started),
            )
            job_id = int(cur.lastrowid or 0)
            self._db.executemany(
                "INSERT INTO job_nodes (job_id, node_id, transport) VALUES (?, ?, ?)",
                [(job_id, node, transport) for node, transport in nodes],
            )
            self._db.execute("DELETE FROM jobs WHERE id <= ?", (job_id - MAX_JOBS,))
        job = Job(job_id, kind, who, model, artifact_sha256, started)
        job.nodes = [JobNode(node, transport) for node, transport in nodes]
        return job

    def finish(self, job_id: int, results: list[NodeResult], error: str = "") -> None:
        """Record each node's result and end the job (``error``: why it stopped early)."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE job_nodes SET outcome=?, ok=?, reason=?, old_version=?, new_version=?,"
                " bytes_sent=?, seconds=?, attempts=? WHERE job_id=? AND node_id=?",
                [
                    (r.outcome, int(r.ok), r.reason, r.old_version, r.new_version, r.bytes_sent,
                     r.seconds, r.attempts, job_id, r.node_id)
                    for r in results
                ],
            )  # fmt: skip
            self._db.execute(
                "UPDATE job_nodes SET outcome='failed', ok=0, reason=?"
                " WHERE job_id=? AND outcome IS NULL",
                (error or "no result", job_id),
            )
            self._db.execute(
                "UPDATE jobs SET state='done', finished_ms=?, error=? WHERE id=?",
                (_now_ms(), error, job_id),
            )

    def jobs(self, limit: int = 20) -> list[Job]:
        """The newest jobs first, with their nodes."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, who, model, artifact_sha256, started_ms, finished_ms, state,"
                " error FROM jobs ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            jobs = [Job(*row) for row in rows]
            for job in jobs:
                job.nodes = self._nodes(job.job_id)
        return jobs

    def get(self, job_id: int) -> Job | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, kind, who, model, artifact_sha256, started_ms, finished_ms, state,"
                " error FROM jobs WHERE id=?",
                (job_id,),
            ).fetchone()
            if row is None:
                return None
            job = Job(*row)
            job.nodes = self._nodes(job_id)
        return job

    def _nodes(self, job_id: int) -> list[JobNode]:
        rows = self._db.execute(
            "SELECT node_id, transport, outcome, ok, reason, old_version, new_version,"
            " bytes_sent, seconds, attempts FROM job_nodes WHERE job_id=? ORDER BY node_id",
            (job_id,),
        ).fetchall()
        out = []
        for node, transport, outcome, ok, reason, old, new, sent, seconds, attempts in rows:
            node_state = JobNode(node, transport)
            if outcome is not None:
                node_state.phase = "finished"
                node_state.result = NodeResult(
                    node, outcome, bool(ok), reason, old, new, sent, seconds, attempts
                )
            out.append(node_state)
        return out
