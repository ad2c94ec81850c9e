"""The journal writer's group commits: a trickle shares commits, and nothing taken is dropped.

``journal.min_commit_interval_s`` keeps two commits at least that far apart; what arrives
meanwhile joins the next commit, and a message after a quiet spell is committed at once. With
``journal.group_from_arrival`` a message in a steady flow waits the interval from its own
arrival instead of until the interval since the previous commit's start is over. A batch held
back either way is still committed (and acknowledged only then) when the writer is cancelled.
Only small commits are held (``journal.group_below_rows``): after a commit that stored many
readings the next message is committed as soon as it is taken. After a commit of several
one-reading messages (a site's trickle) the next one waits ``journal.trickle_commit_interval_s``
instead; a lone node's message or a batch never does. A reading that may raise a threshold
alert (the queue's ``urgent`` screen) is never held, and ends a hold it arrives in.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.config import JournalConfig
from gateway.ingest import Envelope, IngestQueue
from gateway.metrics import Metrics
from gateway.protocol.messages import (
    Ack,
    Channel,
    ReadingBatch,
    Sample,
    TimeBase,
    Transport,
    UplinkMessage,
)
from gateway.store.journal import CommitResult, Journal
from gateway.store.journal_reader import JournalReader
from gateway.store.writer import JournalWriter, hold_until

CHANNELS = (Channel("current", "A"),)


class RecordingLink:
    def __init__(self) -> None:
        self.acks: list[Ack] = []

    def send_ack(self, ack: Ack) -> None:
        self.acks.append(ack)


def env(seq: int, link: RecordingLink, readings: int = 1, value: float = 1.0) -> Envelope:
    samples = tuple(Sample(seq + k, (value,)) for k in range(readings))
    msg = ReadingBatch("pump-1", 3, seq, TimeBase.UPTIME_MS, CHANNELS, samples)
    return Envelope(msg, Transport.SERIAL, 1_000_000 + seq, link)


async def until(condition: object) -> None:
    async with asyncio.timeout(10):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0)


@dataclass
class RunningWriter:
    queue: IngestQueue
    commits: list[CommitResult]
    link: RecordingLink


@contextlib.asynccontextmanager
async def running_writer(
    tmp_path: Path,
    config: JournalConfig,
    urgent: Callable[[UplinkMessage], bool] | None = None,
) -> AsyncIterator[RunningWriter]:
    """A journal writer running on ``config``, its commits recorded; cancelled on exit."""
    queue = IngestQueue(100, "block", urgent=urgent)
    writer = JournalWriter(Journal(tmp_path / "j.db"), queue, config, Metrics())
    running = RunningWriter(queue, [], RecordingLink())
    writer.add_listener(running.commits.append)
    task = asyncio.create_task(writer.run())
    try:
        await writer.ready.wait()
        yield running
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_messages_arriving_within_the_interval_share_one_commit(tmp_path: Path) -> None:
    async with running_writer(tmp_path, JournalConfig(min_commit_interval_s=1.0)) as w:
        w.queue.try_put(env(1, w.link))
        await until(lambda: len(w.commits) == 1)  # the first commits at once
        w.queue.try_put(env(2, w.link))
        await until(lambda: w.queue.qsize() == 0)  # taken, and held for the interval
        w.queue.try_put(env(3, w.link))
        w.queue.try_put(env(4, w.link))
        await until(lambda: len(w.commits) == 2)
    assert [[e.msg.seq for e in c.envelopes] for c in w.commits] == [[1], [2, 3, 4]]
    assert w.link.acks == [Ack("pump-1", 3, 1), Ack("pump-1", 3, 4)]


async def test_a_batch_held_for_the_interval_is_committed_when_the_writer_stops(
    tmp_path: Path,
) -> None:
    queue = IngestQueue(100, "block")
    writer = JournalWriter(
        Journal(tmp_path / "j.db"), queue, JournalConfig(min_commit_interval_s=1.0), Metrics()
    )
    link = RecordingLink()
    task = asyncio.create_task(writer.run())
    await writer.ready.wait()
    queue.try_put(env(1, link))
    await until(lambda: link.acks)
    queue.try_put(env(2, link))
    await until(lambda: queue.qsize() == 0)  # held: its commit is a second away
    assert link.acks == [Ack("pump-1", 3, 1)]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert link.acks == [Ack("pump-1", 3, 1), Ack("pump-1", 3, 2)]
    reader = JournalReader(tmp_path / "j.db")
    assert sorted(reader.reading_keys()) == [("pump-1", 3, 1), ("pump-1", 3, 2)]
    reader.close()


async def test_without_an_interval_each_message_commits_as_soon_as_it_is_taken(
    tmp_path: Path,
) -> None:
    async with running_writer(tmp_path, JournalConfig(min_commit_interval_s=0)) as w:
        for seq in (1, 2, 3):
            w.queue.try_put(env(seq, w.link))
            await until(lambda n=seq: len(w.commits) == n)
    assert [[e.msg.seq for e in c.envelopes] for c in w.commits] == [[1], [2], [3]]


def test_a_message_after_a_quiet_interval_is_due_at_once() -> None:
    # The previous commit started 10 s ago, the interval is 5 ms: nothing to group with.
    assert hold_until(arrived=100.0, last_start=90.0, interval=0.005) == 100.0
    assert hold_until(arrived=100.0, last_start=-math.inf, interval=0.005) == 100.0


def test_a_message_in_a_steady_flow_waits_until_the_interval_since_the_last_start() -> None:
    # 2 ms after the previous commit started: it waits 3 ms, until that commit's interval ends.
    assert hold_until(arrived=100.002, last_start=100.0, interval=0.005) == 100.0 + 0.005


def test_grouping_from_arrival_a_message_waits_one_interval_from_its_own_arrival() -> None:
    # 2 ms after the previous commit started: it waits 5 ms from its arrival, not 3 ms.
    got = hold_until(arrived=100.002, last_start=100.0, interval=0.005, from_arrival=True)
    assert got == 100.002 + 0.005
    # After a quiet spell it is not held either way.
    assert hold_until(arrived=100.0, last_start=90.0, interval=0.005, from_arrival=True) == 100.0


def test_a_backlog_older_than_the_last_start_waits_no_longer_than_the_interval() -> None:
    # Left over from a full commit that started at 100.0, waiting since 99.0.
    assert hold_until(arrived=99.0, last_start=100.0, interval=0.005) == 100.005
    assert hold_until(arrived=99.0, last_start=100.0, interval=0.005, from_arrival=True) == 99.005


def test_no_interval_means_no_wait() -> None:
    assert hold_until(arrived=100.0, last_start=100.0, interval=0.0) == 100.0


async def test_a_message_after_a_quiet_spell_is_not_held_for_the_interval(
    tmp_path: Path,
) -> None:
    # An interval of a minute (past the config's bound, so not validated): were the message
    # held for it, until() would give up after 10 s.
    config = JournalConfig.model_construct(min_commit_interval_s=60.0)
    async with running_writer(tmp_path, config) as w:
        w.queue.try_put(env(1, w.link))
        await until(lambda: len(w.commits) == 1)
    assert w.link.acks == [Ack("pump-1", 3, 1)]


async def test_a_burst_after_a_commit_shares_one_commit(tmp_path: Path) -> None:
    async with running_writer(tmp_path, JournalConfig(min_commit_interval_s=1.0)) as w:
        w.queue.try_put(env(1, w.link))
        await until(lambda: len(w.commits) == 1)
        for seq in range(2, 12):  # ten messages while the first commit's interval runs
            w.queue.try_put(env(seq, w.link))
            await asyncio.sleep(0)
        await until(lambda: len(w.commits) == 2)
    assert [[e.msg.seq for e in c.envelopes] for c in w.commits] == [[1], list(range(2, 12))]
    assert w.link.acks == [Ack("pump-1", 3, 1), Ack("pump-1", 3, 11)]


async def test_after_a_commit_of_many_readings_the_next_message_is_not_held(
    tmp_path: Path,
) -> None:
    # Were the second message held for the minute-long interval, until() would give up.
    config = JournalConfig.model_construct(min_commit_interval_s=60.0, group_below_rows=16)
    async with running_writer(tmp_path, config) as w:
        w.queue.try_put(env(1, w.link, readings=25))  # seqs 1-25: a commit of 25 rows
        await until(lambda: len(w.commits) == 1)
        w.queue.try_put(env(26, w.link))
        await until(lambda: len(w.commits) == 2)
    assert [sum(c.inserted.values()) for c in w.commits] == [25, 1]
    assert w.link.acks == [Ack("pump-1", 3, 25), Ack("pump-1", 3, 26)]


async def test_after_a_commit_of_several_one_reading_messages_the_trickle_interval_applies(
    tmp_path: Path,
) -> None:
    # No interval of its own: without the trickle rule message 3 would be committed at once.
    config = JournalConfig(min_commit_interval_s=0, trickle_commit_interval_s=1.0)
    async with running_writer(tmp_path, config) as w:
        w.queue.try_put(env(1, w.link))
        w.queue.try_put(env(2, w.link))
        await until(lambda: len(w.commits) == 1)
        w.queue.try_put(env(3, w.link))
        await until(lambda: w.queue.qsize() == 0)  # taken, and held for the trickle interval
        w.queue.try_put(env(4, w.link))
        await until(lambda: len(w.commits) == 2)
    assert [[e.msg.seq for e in c.envelopes] for c in w.commits] == [[1, 2], [3, 4]]
    assert w.link.acks == [Ack("pump-1", 3, 2), Ack("pump-1", 3, 4)]


async def test_after_a_lone_message_or_a_batch_the_trickle_interval_does_not_apply(
    tmp_path: Path,
) -> None:
    # A minute-long trickle interval: were message 2 or 6 held for it, until() would give up.
    config = JournalConfig.model_construct(min_commit_interval_s=0, trickle_commit_interval_s=60)
    async with running_writer(tmp_path, config) as w:
        w.queue.try_put(env(1, w.link))  # one message of one reading: a lone node
        await until(lambda: len(w.commits) == 1)
        w.queue.try_put(env(2, w.link, readings=2))  # seqs 2-3
        w.queue.try_put(env(4, w.link, readings=2))  # seqs 4-5: two messages, but batches
        await until(lambda: len(w.commits) >= 2)
        await until(lambda: w.link.acks[-1].up_to_seq == 5)
        w.queue.try_put(env(6, w.link))
        await until(lambda: w.link.acks[-1].up_to_seq == 6)
    assert [e.msg.seq for c in w.commits for e in c.envelopes] == [1, 2, 4, 6]


def current_at_least_50(msg: UplinkMessage) -> bool:
    """A stand-in for the alert rules' ThresholdScreen: any reading of 50 A or more."""
    return isinstance(msg, ReadingBatch) and any(s.values[0] >= 50 for s in msg.samples)


async def test_a_reading_that_may_raise_an_alert_is_not_held_for_the_trickle_interval(
    tmp_path: Path,
) -> None:
    # A minute-long trickle interval: were message 3 held for it, until() would give up.
    config = JournalConfig.model_construct(min_commit_interval_s=0, trickle_commit_interval_s=60)
    async with running_writer(tmp_path, config, urgent=current_at_least_50) as w:
        w.queue.try_put(env(1, w.link))
        w.queue.try_put(env(2, w.link))
        await until(lambda: len(w.commits) == 1)  # two one-reading messages: a trickle
        w.queue.try_put(env(3, w.link, value=80.0))
        await until(lambda: len(w.commits) == 2)
    assert [[e.msg.seq for e in c.envelopes] for c in w.commits] == [[1, 2], [3]]
    assert w.link.acks == [Ack("pump-1", 3, 2), Ack("pump-1", 3, 3)]


async def test_a_reading_that_may_raise_an_alert_ends_the_hold_it_arrives_in(
    tmp_path: Path,
) -> None:
    config = JournalConfig.model_construct(min_commit_interval_s=60.0, group_below_rows=16)
    async with running_writer(tmp_path, config, urgent=current_at_least_50) as w:
        w.queue.try_put(env(1, w.link))
        await until(lambda: len(w.commits) == 1)  # the first commits at once
        w.queue.try_put(env(2, w.link))
        await until(lambda: w.queue.qsize() == 0)  # taken, and held for a minute
        await asyncio.sleep(0.05)
        assert len(w.commits) == 1
        w.queue.try_put(env(3, w.link, value=80.0))
        await until(lambda: len(w.commits) == 2)  # message 2 goes along with it
    assert [[e.msg.seq for e in c.envelopes] for c in w.commits] == [[1], [2, 3]]


async def test_readings_that_raise_nothing_still_wait_out_the_hold(tmp_path: Path) -> None:
    config = JournalConfig(min_commit_interval_s=0.5)
    async with running_writer(tmp_path, config, urgent=current_at_least_50) as w:
        w.queue.try_put(env(1, w.link))
        await until(lambda: len(w.commits) == 1)
        w.queue.try_put(env(2, w.link))
        await until(lambda: w.queue.qsize() == 0)  # taken, and held
        w.queue.try_put(env(3, w.link, value=49.0))
        await asyncio.sleep(0.1)
        assert len(w.commits) == 1  # 49 A cannot raise the alert: no reason to hurry
        await until(lambda: len(w.commits) == 2)
    assert [[e.msg.seq for e in c.envelopes] for c in w.commits] == [[1], [2, 3]]
