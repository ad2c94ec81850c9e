"""A commit already running on the journal thread when the writer is cancelled still counts.

The writer hands the transaction to its thread and is woken by the thread itself; cancelled
meanwhile (the gateway stopping), it waits for that transaction, acknowledges what it made
durable, and only then ends: a reading in the file is never left unacknowledged by a stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest

from gateway.config import JournalConfig
from gateway.errors import StorageFault
from gateway.ingest import Envelope, IngestQueue
from gateway.metrics import Metrics
from gateway.protocol.messages import Ack
from gateway.store.journal import CommitResult, Journal
from gateway.store.journal_reader import JournalReader
from gateway.store.writer import JournalWriter
from tests.unit.store.test_writer_grouping import RecordingLink, env, until


class GatedJournal(Journal):
    """A journal whose commits wait for ``release`` (set from the test), on the journal thread."""

    def __init__(self, path: Path, *, fail: bool = False) -> None:
        super().__init__(path)
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail = fail

    def commit(self, envelopes: list[Envelope]) -> CommitResult:
        self.started.set()
        self.release.wait(10)
        if self.fail:
            raise StorageFault("disk full (test)")
        return super().commit(envelopes)


async def cancelled_mid_commit(
    tmp_path: Path, *, fail: bool = False
) -> tuple[asyncio.Task[None], GatedJournal, RecordingLink]:
    """A writer whose first commit is running on the journal thread when it is cancelled."""
    queue = IngestQueue(100, "block")
    journal = GatedJournal(tmp_path / "j.db", fail=fail)
    writer = JournalWriter(journal, queue, JournalConfig(min_commit_interval_s=0), Metrics())
    link = RecordingLink()
    task = asyncio.create_task(writer.run())
    await writer.ready.wait()
    queue.try_put(env(1, link))
    await until(journal.started.is_set)
    task.cancel()
    return task, journal, link


async def test_a_commit_running_when_the_writer_is_cancelled_is_acknowledged(
    tmp_path: Path,
) -> None:
    task, journal, link = await cancelled_mid_commit(tmp_path)
    await asyncio.sleep(0.05)
    assert not task.done()  # waiting for the transaction, not gone without its acks
    journal.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert link.acks == [Ack("pump-1", 3, 1)]
    reader = JournalReader(tmp_path / "j.db")
    assert reader.reading_keys() == [("pump-1", 3, 1)]
    reader.close()


async def test_a_commit_that_fails_while_the_writer_is_cancelled_acknowledges_nothing(
    tmp_path: Path,
) -> None:
    task, journal, link = await cancelled_mid_commit(tmp_path, fail=True)
    journal.release.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()  # the stop goes on; the disk's fault is not raised instead
    assert link.acks == []  # never acknowledged, so the node still holds it
