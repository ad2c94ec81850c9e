"""A gateway restart changes no reading's timestamp (the soak's "collisions after restarts").

Nodes in ``UPTIME_MS`` stamp readings with uptime; the journal maps them onto wall time
through a per-(node, boot) offset estimated from arrivals (gateway/store/clock.py). After a
``kill -9`` the first messages of a node are usually its backlog, resent late. An estimate
started afresh from those takes their wait for clock offset: the backlog is stamped that
much later, onto the timestamps of readings taken after it, and a store whose point
identity is measurement + tags + timestamp keeps one of each pair. These tests run the real
journal on a file, restart it (close and reopen, as a new process would) between an
on-time stream and the resent backlog, and compare every timestamp with the same traffic
through a journal that never restarted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ingest import Envelope
from gateway.protocol.messages import Channel, ReadingBatch, Sample, TimeBase, Transport
from gateway.store.journal import Journal

CHANNELS = (Channel("current", "A"),)
NODE, BOOT = "pump-1", 7
BOOTED_AT = 1_700_000_000_000  # wall time of the node's uptime 0
PERIOD = 500  # ms between readings
DELAY = 20  # transit time of a message sent on time
ON_TIME = 10  # seqs 1..10 arrive on time before the gateway dies
BACKLOG = 3  # seqs 11..13 are taken while it is down
LATER = 7  # seqs 14..20 are taken after it is back


def uptime(seq: int) -> int:
    return seq * PERIOD


def reading(seq: int) -> ReadingBatch:
    return ReadingBatch(
        NODE, BOOT, seq, TimeBase.UPTIME_MS, CHANNELS, (Sample(uptime(seq), (float(seq),)),)
    )


def on_time(seq: int) -> Envelope:
    return Envelope(reading(seq), Transport.SERIAL, BOOTED_AT + uptime(seq) + DELAY)


def burst() -> Iterator[list[Envelope]]:
    """The gateway is back at the first later tick; the node resends its backlog at once
    (all in one millisecond), then sends each new reading on time."""
    back = BOOTED_AT + uptime(ON_TIME + BACKLOG + 1)
    yield [
        Envelope(reading(s), Transport.SERIAL, back)
        for s in range(ON_TIME + 1, ON_TIME + BACKLOG + 1)
    ]
    for s in range(ON_TIME + BACKLOG + 1, ON_TIME + BACKLOG + LATER + 1):
        yield [on_time(s)]


def on_schedule() -> Iterator[list[Envelope]]:
    """The node resends one buffered reading per sampling tick, just before that tick's new
    reading: each resend waited a whole number of periods (the soak's pattern)."""
    backlog = list(range(ON_TIME + 1, ON_TIME + BACKLOG + 1))
    for s in range(ON_TIME + BACKLOG + 1, ON_TIME + BACKLOG + LATER + 1):
        tick = []
        if backlog:
            tick.append(Envelope(reading(backlog.pop(0)), Transport.SERIAL, on_time(s).rx_ms))
        tick.append(on_time(s))
        yield tick


def timestamps(path: Path) -> dict[int, int]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT seq, ts_ms FROM readings WHERE node_id=?", (NODE,)))
    finally:
        db.close()


def run(path: Path, after_outage: Iterator[list[Envelope]], *, restart: bool) -> dict[int, int]:
    journal = Journal(path)
    journal.open()
    for s in range(1, ON_TIME + 1):
        journal.commit([on_time(s)])
    if restart:  # kill -9 and start again: nothing but the file carries over
        journal.close()
        journal = Journal(path)
        journal.open()
    for messages in after_outage:
        journal.commit(messages)
    journal.close()
    return timestamps(path)


@pytest.mark.parametrize("after_outage", [burst, on_schedule], ids=["burst", "on-schedule"])
def test_a_restart_changes_no_timestamp(tmp_path: Path, after_outage) -> None:  # type: ignore[no-untyped-def]
    restarted = run(tmp_path / "restarted.db", after_outage(), restart=True)
    stayed_up = run(tmp_path / "stayed-up.db", after_outage(), restart=False)
    assert len(restarted) == ON_TIME + BACKLOG + LATER
    # Each reading on the wall time it was taken (plus the smallest transit seen).
    assert stayed_up == {s: BOOTED_AT + uptime(s) + DELAY for s in stayed_up}
    assert restarted == stayed_up


@pytest.mark.parametrize("after_outage", [burst, on_schedule], ids=["burst", "on-schedule"])
def test_after_a_restart_no_two_readings_share_a_timestamp(tmp_path: Path, after_outage) -> None:  # type: ignore[no-untyped-def]
    stamps = run(tmp_path / "j.db", after_outage(), restart=True)
    shared = {ts: [s for s in stamps if stamps[s] == ts] for ts in stamps.values()}
    assert {ts: seqs for ts, seqs in shared.items() if len(seqs) > 1} == {}


def test_the_offset_survives_any_number_of_restarts(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    for s in range(1, ON_TIME + 1):
        journal = Journal(path)
        journal.open()
        journal.commit([on_time(s)])
        journal.close()
    # A resend that waited a minute, alone after the last restart: stamped when it was taken.
    journal = Journal(path)
    journal.open()
    late = Envelope(reading(ON_TIME + 1), Transport.SERIAL, on_time(ON_TIME + 1).rx_ms + 60_000)
    journal.commit([late])
    journal.close()
    assert timestamps(path)[ON_TIME + 1] == BOOTED_AT + uptime(ON_TIME + 1) + DELAY
