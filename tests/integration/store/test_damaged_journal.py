"""A damaged journal is found at start, set aside (never silently replaced) and salvaged.

Before: a corrupt journal stopped start-up with a traceback and nothing set aside; an empty
journal file was silently replaced; random bytes mid-file went undetected.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.events import AlertEvent, AlertEventKind
from gateway.ingest import Envelope
from gateway.protocol.messages import Channel, ReadingBatch, Sample, TimeBase, Transport
from gateway.store.journal import Journal
from gateway.store.journal_reader import JournalReader
from tests.fixtures.cli import fieldgate
from tests.fixtures.gateway import gateway_config, running_gateway

CHANNELS = (Channel("current", "A"),)


def fill(path: Path, batches: int = 400) -> None:
    journal = Journal(path)
    journal.open()
    for seq in range(1, batches * 10, 10):
        samples = tuple(Sample(t=seq + i, values=(float(i),)) for i in range(10))
        msg = ReadingBatch("pump-01", 1, seq, TimeBase.UPTIME_MS, CHANNELS, samples)
        journal.commit([Envelope(msg, Transport.SERIAL, 1_000_000 + seq, None)])
    journal.close()


def damage(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(8192))


async def test_random_bytes_mid_file_are_detected_and_the_journal_set_aside(
    tmp_path: Path,
) -> None:
    cfg = gateway_config(tmp_path)
    cfg.data_dir.mkdir(parents=True)
    fill(cfg.journal_path)
    damage(cfg.journal_path)
    async with running_gateway(cfg) as gw:
        sub = gw.alert_bus.subscribe(10)
        assert gw.journal.set_aside is not None
        assert gw.journal.set_aside.name.startswith("journal.db.damaged-")
        event = await anext(sub)
        sub.close()
    assert isinstance(event, AlertEvent)
    assert event.kind is AlertEventKind.RAISED
    assert event.alert.rule == "journal_set_aside"
    assert "fieldgate journal recover" in event.alert.message
    assert gw.journal.set_aside.exists()
    reader = JournalReader(cfg.journal_path)  # the new journal works
    assert reader.count_readings() == 0
    reader.close()


async def test_an_empty_journal_file_is_set_aside_not_silently_replaced(tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path)
    cfg.data_dir.mkdir(parents=True)
    cfg.journal_path.write_bytes(b"")
    async with running_gateway(cfg) as gw:
        assert gw.journal.set_aside_reason is not None
        assert "empty" in gw.journal.set_aside_reason
    assert [p.name for p in cfg.data_dir.glob("journal.db.damaged-*")]


def test_check_and_recover_salvage_the_readable_rows(tmp_path: Path) -> None:
    sound = tmp_path / "sound.db"
    fill(sound)
    assert fieldgate("journal", "check", str(sound)).returncode == 0
    reader = JournalReader(sound)
    total = reader.count_readings()
    reader.close()

    damaged = tmp_path / "damaged.db"
    fill(damaged)
    damage(damaged)
    check = fieldgate("journal", "check", str(damaged))
    assert check.returncode == 1
    assert "damaged" in check.stdout
    assert "fieldgate journal recover" in check.stdout

    done = fieldgate("journal", "recover", str(damaged), "--to", str(tmp_path / "salvage.db"))
    assert done.returncode == 0, done.stdout + done.stderr
    reader = JournalReader(tmp_path / "salvage.db")
    salvaged = reader.count_readings()
    reader.close()
    assert 0 < salvaged <= total
    assert fieldgate("journal", "check", str(tmp_path / "salvage.db")).returncode == 0
    # The damaged file itself is left as it was.
    assert fieldgate("journal", "check", str(damaged)).returncode == 1
