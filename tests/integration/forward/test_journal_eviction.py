"""The journal evicts raw readings under its byte budget; no summary ever misses one.

The forwarder holds the journal's retention at the lowest reading it has not summarised
durably (``Forwarder.catch_up`` is the retention's ``before_evict``). With a zero budget
the journal evicts everything it is allowed to, after every step, and still every
committed reading is counted in exactly one summary. The control shows the test would see
a miss: evicting without the forwarder's bound loses readings from the summaries.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from gateway.forward.forwarder import Forwarder
from gateway.store.journal_reader import JournalReader
from tests.fixtures.forward import Plant, fast_forward_config, now_ms

_COUNT = re.compile(rb"^fieldgate_summary,.*channel=current.* .*\bcount=(\d+)i")


def _summarised(fwd: Forwarder) -> int:
    return sum(int(m.group(1)) for _, line in fwd.backlog.lines() if (m := _COUNT.match(line)))


@pytest.mark.parametrize("held", [True, False], ids=["held-by-forwarder", "control-unheld"])
async def test_summaries_count_every_reading_the_journal_evicts(tmp_path: Path, held: bool) -> None:
    plant = Plant(tmp_path / "journal.db")
    # The store is unreachable: everything stays in the backlog for us to read.
    cfg = fast_forward_config("http://127.0.0.1:9", interval_s=0.5, late_grace_s=0.1)
    fwd = Forwarder(cfg, site="s", journal_path=plant.path, backlog_path=tmp_path / "forward.db")
    run = asyncio.create_task(fwd.run(), name="test:forward")
    try:
        await fwd.ready.wait()
        evicted = 0
        for _ in range(120):
            plant.step()
            keep = await fwd.catch_up() if held else None
            evicted += plant.journal.enforce_budget(0, chunk_rows=50, keep_from_id=keep)
            await asyncio.sleep(0.01)
        await asyncio.sleep(cfg.interval_s + cfg.late_grace_s + 0.3)
        await fwd.summarise_now()
        reader = JournalReader(plant.path)
        assert reader.evictions().get("raw_readings", 0) == evicted > 100, "the journal evicted"
        reader.close()
        committed = sum(plant.committed.values())
        if held:
            assert _summarised(fwd) == committed
        else:
            assert _summarised(fwd) < committed, "evicting unsummarised readings loses them"
    finally:
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        plant.close()


async def test_forwarding_enabled_on_a_journal_with_history_summarises_all_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill in chunks (here 500 rows): every reading once, none counted late."""
    monkeypatch.setattr("gateway.forward.forwarder.BACKFILL_CHUNK", 500)
    plant = Plant(tmp_path / "journal.db")
    start = now_ms() - 3_000_000
    for i in range(3000):  # 50 minutes of history, one reading per node per second
        plant.step(ts_ms=start + i * 1000)
    cfg = fast_forward_config("http://127.0.0.1:9", interval_s=60.0, late_grace_s=10.0)
    fwd = Forwarder(cfg, site="s", journal_path=plant.path, backlog_path=tmp_path / "forward.db")
    run = asyncio.create_task(fwd.run(), name="test:forward")
    try:
        await fwd.ready.wait()
        await fwd.summarise_now(start + 3_000_000 + 60_000 + 10_000)  # all history closed
        assert _summarised(fwd) == sum(plant.committed.values()) == 9000
        late = [
            line for _, line in fwd.backlog.lines() if b"late=" in line and b"late=0i" not in line
        ]
        assert not late, late[:3]
    finally:
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        plant.close()
