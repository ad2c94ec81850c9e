"""The durable journal: every accepted node message, once, in SQLite (WAL).

One writer thread owns the write connection (``commit`` is called through
``asyncio.to_thread``-style executors only, never on the event loop). Readers
(dashboard, pipeline, tests) open their own read-only connections: WAL lets them
read while the writer commits.

Identity is ``(node_id, boot_id, seq)`` (invariant "Identity of data"): a second copy
of a message inserts nothing and is counted as a duplicate. Sequence accounting
(what may be acknowledged, what is lost) is in gateway.store.sequence; the
bookkeeping is written in the same transaction as the data, so a ``kill -9``
between two commits leaves both consistent.

Durability: ``synchronous=FULL`` (default) fsyncs the WAL at every commit, so an
acknowledged message survives power loss as well as a crash. With ``NORMAL`` a
crash of the process loses nothing committed, but a power cut may roll back the
last commits (up to one WAL checkpoint interval) — messages that were already
acknowledged to their nodes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from gateway.errors import StorageFault, StoreError
from gateway.ingest import Envelope
from gateway.protocol.messages import Ack, Channel, NodeInference, ReadingBatch, Status
from gateway.store.clock import NodeClock
from gateway.store.faults import is_storage_fault
from gateway.store.journal_rows import NotAllNew, PendingRows, insert, packer
from gateway.store.journal_schema import (
    JOURNAL_SCHEMA_VERSION,
    MIGRATIONS,
    SCHEMA,
    size_bytes,
)
from gateway.store.recovery import hold_lock, journal_problem, set_aside
from gateway.store.schema_version import open_schema
from gateway.store.sequence import StreamState

_LOGGER = logging.getLogger(__name__)


@dataclass
class CommitResult:
    """What one group commit did; acks are ready to send (their data is durable)."""

    acks: list[tuple[Envelope, Ack]] = field(default_factory=list)
    inserted: Counter[str] = field(default_factory=Counter)  # per transport, readings + others
    duplicates: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    seconds: float = 0.0
    envelopes: list[Envelope] = field(default_factory=list)
    # For consumers of committed data (the scoring pipeline), in ``envelopes`` order: how many
    # of each envelope's messages were new (0: a pure duplicate), and the wall-clock ms of each
    # of its samples (one entry for an inference or a status).
    new_counts: list[int] = field(default_factory=list)
    wall_ms: list[tuple[int, ...]] = field(default_factory=list)
    lost_by_node: Counter[str] = field(default_factory=Counter)  # ``lost`` split by node
    # Messages refused because their seq jumped past the node's window (by node).
    seq_jumps: Counter[str] = field(default_factory=Counter)


def unpack_values(blob: bytes) -> tuple[float, ...]:
    """A reading's values from its ``vals`` column (see journal_rows.packer)."""
    return struct.unpack(f"<{len(blob) // 8}d", blob)


class Journal:
    """The write side of the journal. Not thread-safe: one writer thread calls it."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        skew_limit_ms: int = 2000,
        max_seq_jump: int = 100_000,
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._skew_limit_ms = skew_limit_ms
        self._max_seq_jump = max_seq_jump
        self._db: sqlite3.Connection | None = None
        self._streams: dict[tuple[str, int], StreamState] = {}
        self._clocks: dict[tuple[str, int], NodeClock] = {}
        self._current_boot: dict[str, int] = {}
        self._channel_sets: dict[str, int] = {}
        self._last_channels: tuple[tuple[Channel, ...] | None, int] = (None, 0)
        self._closed: list[tuple[str, int]] = []
        self._pending = PendingRows()  # this transaction's rows known to be new
        self._combine = True  # whether known-new rows may wait for one statement
        # Where a damaged journal found at open was moved, and why (None: it was sound).
        self.set_aside: Path | None = None
        self._lock: IO[bytes] | None = None
        self.set_aside_reason: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = hold_lock(self.path)
        problem = journal_problem(self.path)
        if problem is not None:
            # Never silently replaced: moved aside for `fieldgate journal recover`.
            self.set_aside = set_aside(self.path)
            self.set_aside_reason = problem
            _LOGGER.error(
                "journal %s is damaged (%s): moved to %s and a new journal started; nodes "
                "resend what was never acknowledged. Salvage the rest with: fieldgate journal "
                "recover %s",
                self.path,
                problem,
                self.set_aside,
                self.set_aside,
            )
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute("PRAGMA foreign_keys=OFF")
            open_schema(db, f"journal {self.path}", SCHEMA, JOURNAL_SCHEMA_VERSION, MIGRATIONS)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open journal {self.path}: {exc}") from exc
        self._db = db
        self._load_state()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _load_state(self) -> None:
        db = self._require()
        for spec, cid in db.execute("SELECT spec, id FROM channel_sets"):
            self._channel_sets[spec] = cid
        rows = db.execute(
            "SELECT node_id, boot_id, acked, highest_seen, received, duplicates, lost, offset_ms"
            " FROM streams"
        ).fetchall()
        for node_id, boot_id, acked, highest, received, dups, lost, offset in rows:
            state = StreamState(node_id, boot_id, acked, set(), highest, lost, received, dups)
            # The clock offset carries over a restart: estimated afresh, it would be taken from
            # the node's resent backlog, whose wait would shift readings onto later ones'
            # timestamps. (A clock already in memory, after a rolled-back commit, is kept.)
            if offset is not None and (node_id, boot_id) not in self._clocks:
                self._clocks[(node_id, boot_id)] = NodeClock(self._skew_limit_ms, offset_ms=offset)
            # Committed seqs above the watermark (out of order before the restart).
            for table in ("readings", "inferences", "statuses"):
                state.ahead.update(
                    s
                    for (s,) in db.execute(
                        f"SELECT seq FROM {table} WHERE node_id=? AND boot_id=? AND seq>?",
                        (node_id, boot_id, acked),
                    )
                )
            self._streams[(node_id, boot_id)] = state
        for node_id, boot_id in db.execute("SELECT node_id, boot_id FROM nodes"):
            self._current_boot[node_id] = boot_id

    def _reload_state(self) -> None:
        self._streams.clear()
        self._current_boot.clear()
        self._channel_sets.clear()
        self._last_channels = (None, 0)
        self._closed = []
        self._load_state()

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("journal is not open")
        return self._db

    # -- the write path ----------------------------------------------------------------------

    def commit(self, envelopes: list[Envelope]) -> CommitResult:
        """Store ``envelopes`` in one transaction; return the acks that are now true."""
        try:
            return self._commit(envelopes, combine=True)
        except NotAllNew as exc:
            # The stream state said new and the file had them (a journal restored or
            # salvaged under a running state?): nothing of it was kept, so do it again
            # with a statement per message, whose counts are right whatever the file holds.
            _LOGGER.warning("journal %s: %s; stored message by message", self.path, exc)
            return self._commit(envelopes, combine=False)

    def _commit(self, envelopes: list[Envelope], *, combine: bool) -> CommitResult:
        db = self._require()
        started = time.perf_counter()
        result = CommitResult(envelopes=envelopes)
        self._closed = []
        self._combine = combine
        db.execute("BEGIN IMMEDIATE")
        try:
            touched = self._write(db, envelopes, result)
            db.execute("COMMIT")
        except BaseException as exc:
            # SQLite may already have rolled back (SQLITE_FULL does): a failing ROLLBACK
            # must not hide the cause.
            self._pending.clear()
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            # The in-memory stream state ran ahead of what is committed: go back to the
            # file, so no ack is ever computed from a transaction that did not happen.
            self._reload_state()
            if is_storage_fault(exc):
                raise StorageFault(f"journal {self.path}: {exc}") from exc
            raise
        for (node_id, boot_id), env in touched.items():
            state = self._streams[(node_id, boot_id)]
            if env.link is not None and state.acked > 0:
                result.acks.append((env, Ack(node_id, boot_id, state.acked)))
        result.seconds = time.perf_counter() - started
        return result

    def _write(
        self, db: sqlite3.Connection, envelopes: list[Envelope], result: CommitResult
    ) -> dict[tuple[str, int], Envelope]:
        """The inside of one commit's transaction; returns the streams it touched."""
        touched: dict[tuple[str, int], Envelope] = {}
        node_updates: dict[str, Envelope] = {}
        new_counts, wall_ms = result.new_counts, result.wall_ms
        # Per transport: [inserted, duplicates], folded into the result's counters below.
        totals: dict[str, list[int]] = {}
        for env in envelopes:
            msg = env.msg
            key = (msg.node_id, msg.boot_id)
            state = self._streams.get(key)
            if state is None:
                state = self._new_stream(env, result)
            elif state.is_jump(msg.seq, self._max_seq_jump):
                # Not stored, not acknowledged: a forged or corrupt seq would otherwise
                # turn the node's real readings into "duplicates" or "late" ones.
                result.seq_jumps[msg.node_id] += 1
                new_counts.append(0)
                wall_ms.append(())
                continue
            new, duplicates = self._store(db, env, state, result)
            counts = totals.get(env.transport)
            if counts is None:
                counts = totals[env.transport] = [0, 0]
            counts[0] += new
            counts[1] += duplicates
            touched[key] = env
            node_updates[msg.node_id] = env
        for transport, (inserted, duplicates) in totals.items():
            result.inserted[str(transport)] += inserted
            result.duplicates[str(transport)] += duplicates
        self._pending.flush(db)
        self._save_streams(db, touched)
        self._save_nodes(db, node_updates)
        return touched

    def _store(
        self, db: sqlite3.Connection, env: Envelope, state: StreamState, result: CommitResult
    ) -> tuple[int, int]:
        """Insert one message and account its seqs; returns (new, duplicates)."""
        msg = env.msg
        if isinstance(msg, ReadingBatch):
            # Above everything this stream has committed: new for sure, so its rows can wait
            # and go in with the other new rows of this commit.
            known_new = self._combine and msg.seq > state.highest_seen
            new, wall = self._insert_readings(db, env, msg, known_new=known_new)
        elif isinstance(msg, NodeInference):
            new, wall = self._insert_inference(db, env, msg)
        else:
            new, wall = self._insert_status(db, env, msg)
        result.new_counts.append(new)
        result.wall_ms.append(wall)
        first, last = msg.seq, msg.last_seq
        duplicates = last - first + 1 - new
        if new and first <= state.acked:
            # Arrived after we had counted it lost (late copy across a reboot).
            state.lost -= min(new, state.acked - first + 1)
        state.commit(first, last)
        state.received += new
        state.duplicates += duplicates
        if isinstance(msg, Status) and msg.oldest_unacked_seq:
            given_up = state.give_up_below(msg.oldest_unacked_seq)
            result.lost += given_up
            result.lost_by_node[msg.node_id] += given_up
        return new, duplicates

    def _new_stream(self, env: Envelope, result: CommitResult) -> StreamState:
        """Start the stream of a (node, boot) not seen before; a new boot closes the old one."""
        msg = env.msg
        state = StreamState(msg.node_id, msg.boot_id)
        self._streams[(msg.node_id, msg.boot_id)] = state
        previous = self._current_boot.get(msg.node_id)
        if previous is not None and previous != msg.boot_id:
            old_key = (msg.node_id, previous)
            old = self._streams.get(old_key)
            if old is not None:
                closed_lost = old.close()
                result.lost += closed_lost
                result.lost_by_node[msg.node_id] += closed_lost
                self._closed.append(old_key)
            _LOGGER.info("%s: rebooted (boot %08x -> %08x)", msg.node_id, previous, msg.boot_id)
        self._require().execute(
            "INSERT OR IGNORE INTO streams VALUES (?, ?, 0, 0, 0, 0, 0, ?, NULL)",
            (msg.node_id, msg.boot_id, env.rx_ms),
        )
        self._current_boot[msg.node_id] = msg.boot_id
        self._require().execute(
            "UPDATE nodes SET reboots = reboots + 1, boot_id = ? WHERE node_id = ?",
            (msg.boot_id, msg.node_id),
        )
        return state

    def _clock(self, node_id: str, boot_id: int) -> NodeClock:
        clock = self._clocks.get((node_id, boot_id))
        if clock is None:
            clock = self._clocks[(node_id, boot_id)] = NodeClock(self._skew_limit_ms)
        return clock

    def _channel_set(self, db: sqlite3.Connection, batch: ReadingBatch) -> int:
        # The codec hands out one tuple per distinct channel list, so a stream of batches
        # usually repeats the very same object (held here, so its identity is never reused).
        if batch.channels is self._last_channels[0]:
            return self._last_channels[1]
        spec = ",".join(f"{c.name}:{c.unit}" for c in batch.channels)
        cid = self._channel_sets.get(spec)
        if cid is None:
            db.execute("INSERT OR IGNORE INTO channel_sets (spec) VALUES (?)", (spec,))
            (cid,) = db.execute("SELECT id FROM channel_sets WHERE spec=?", (spec,)).fetchone()
            self._channel_sets[spec] = cid
        self._last_channels = (batch.channels, cid)
        return cid

    def _insert_readings(
        self, db: sqlite3.Connection, env: Envelope, batch: ReadingBatch, *, known_new: bool
    ) -> tuple[int, tuple[int, ...]]:
        cid = self._channel_set(db, batch)
        clock = self._clock(batch.node_id, batch.boot_id)
        node_id, boot_id, rx, tr = batch.node_id, batch.boot_id, env.rx_ms, env.transport.value
        tb = batch.time_base
        samples = batch.samples
        pack = packer(len(batch.channels))
        if len(samples) == 1:  # the common single-reading message: no lists to build
            (sample,) = samples
            wall: tuple[int, ...] = (clock.to_wall_ms(tb, sample.t, rx),)
            params = [node_id, boot_id, batch.seq, wall[0], rx, tr, cid, pack(*sample.values)]
        else:
            node_ts = [s.t for s in samples]
            # The newest sample first: it sets the offset (a batch's older samples only look
            # later), so a stream's first batch keeps its spacing instead of all landing on rx.
            newest = clock.to_wall_ms(tb, node_ts[-1], rx)
            wall = (*clock.to_wall_ms_many(tb, node_ts[:-1], rx), newest)
            params = []
            seq = batch.seq
            for ts, sample in zip(wall, samples, strict=True):
                params += (node_id, boot_id, seq, ts, rx, tr, cid, pack(*sample.values))
                seq += 1
        if known_new:
            self._pending.add(params)
            return len(samples), wall
        # Its own statement, to learn how many of its rows were new; rows pending before it
        # go in first, so the file sees every row in message order.
        self._pending.flush(db)
        return insert(db, params), wall

    def _insert_inference(
        self, db: sqlite3.Connection, env: Envelope, m: NodeInference
    ) -> tuple[int, tuple[int, ...]]:
        ts = self._clock(m.node_id, m.boot_id).to_wall_ms(m.time_base, m.t, env.rx_ms)
        cur = db.execute(
            "INSERT OR IGNORE INTO inferences VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (m.node_id, m.boot_id, m.seq, ts, env.rx_ms, env.transport.value, m.model_id,
             m.model_version, m.model_hash, m.score, m.label, m.latency_us),
        )  # fmt: skip
        return cur.rowcount, (ts,)

    def _insert_status(
        self, db: sqlite3.Connection, env: Envelope, m: Status
    ) -> tuple[int, tuple[int, ...]]:
        ts = self._clock(m.node_id, m.boot_id).to_wall_ms(m.time_base, m.t, env.rx_ms)
        body = {
            "uptime_ms": m.uptime_ms,
            "battery_mv": m.battery_mv,
            "rssi_dbm": m.rssi_dbm if m.rssi_dbm is not None else env.rssi_dbm,
            "free_ram_bytes": m.free_ram_bytes,
            "firmware_version": m.firmware_version,
            "oldest_unacked_seq": m.oldest_unacked_seq,
            "slots": [_slot_json(s) for s in m.slots],
        }
        cur = db.execute(
            "INSERT OR IGNORE INTO statuses VALUES (?, ?, ?, ?, ?, ?, ?)",
            (m.node_id, m.boot_id, m.seq, ts, env.rx_ms, env.transport.value, json.dumps(body)),
        )
        return cur.rowcount, (ts,)

    def _save_streams(
        self, db: sqlite3.Connection, touched: dict[tuple[str, int], Envelope]
    ) -> None:
        rows = []
        clocks = self._clocks
        for key in [*touched, *self._closed]:
            s = self._streams[key]
            clock = clocks.get(key)
            offset = None if clock is None else clock.offset_ms
            rows.append((s.acked, s.highest_seen, s.received, s.duplicates, s.lost, offset, *key))
        db.executemany(
            "UPDATE streams SET acked=?, highest_seen=?, received=?, duplicates=?, lost=?,"
            " offset_ms=coalesce(?, offset_ms) WHERE node_id=? AND boot_id=?",
            rows,
        )

    def _save_nodes(self, db: sqlite3.Connection, updates: dict[str, Envelope]) -> None:
        for node_id, env in updates.items():
            msg = env.msg
            skewed = int(self._clock(node_id, msg.boot_id).skewed)
            db.execute(
                "INSERT INTO nodes (node_id, transport, first_seen_ms, last_seen_ms, boot_id,"
                " rssi_dbm, clock_skewed) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(node_id) DO UPDATE SET transport=excluded.transport,"
                " last_seen_ms=max(last_seen_ms, excluded.last_seen_ms),"
                " rssi_dbm=coalesce(excluded.rssi_dbm, rssi_dbm),"
                " clock_skewed=excluded.clock_skewed",
                (node_id, env.transport.value, env.rx_ms, env.rx_ms, msg.boot_id, env.rssi_dbm,
                 skewed),
            )  # fmt: skip
            if isinstance(msg, Status):
                db.execute(
                    "UPDATE nodes SET battery_mv=?, free_ram_bytes=?, firmware_version=?, model=?,"
                    " rssi_dbm=coalesce(?, rssi_dbm) WHERE node_id=?",
                    (msg.battery_mv, msg.free_ram_bytes, msg.firmware_version,
                     json.dumps([_slot_json(s) for s in msg.slots]), msg.rssi_dbm, node_id),
                )  # fmt: skip

    # -- retention (invariant "Loss is explicit") --------------------------------------------

    def enforce_budget(
        self, raw_budget_bytes: int, chunk_rows: int = 5000, *, keep_from_id: int | None = None
    ) -> int:
        """Evict the oldest raw readings until the file fits ``raw_budget_bytes``.

        Only raw readings are evicted (alerts and node inferences never are). Every evicted
        row is counted in the ``evictions`` table. Returns how many rows went.
        ``keep_from_id``: rows from this id on are kept even over budget (the forwarder has
        not summarised them yet). The newest row always stays, so ids never restart.
        """
        db = self._require()
        evicted = 0
        limit = "SELECT max(id) FROM readings"
        if keep_from_id is not None:
            limit = f"SELECT min(({limit}), {int(keep_from_id)})"
        while size_bytes(db) > raw_budget_bytes:
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute(
                "DELETE FROM readings WHERE id IN (SELECT id FROM readings"
                f" WHERE id < ({limit}) ORDER BY id LIMIT ?)",
                (chunk_rows,),
            )
            n = cur.rowcount
            db.execute(
                "INSERT INTO evictions VALUES ('raw_readings', ?)"
                " ON CONFLICT(kind) DO UPDATE SET count = count + excluded.count",
                (n,),
            )
            db.execute("COMMIT")
            evicted += n
            if n == 0:
                break
        if evicted:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            _LOGGER.warning("journal over budget: evicted %d oldest raw readings", evicted)
        return evicted

    def stream(self, node_id: str, boot_id: int) -> StreamState | None:
        return self._streams.get((node_id, boot_id))


def _slot_json(slot: object) -> dict[str, object]:
    from dataclasses import asdict

    data = asdict(slot)  # type: ignore[call-overload]
    data["model_hash"] = data["model_hash"].hex()
    return data
