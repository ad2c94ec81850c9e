"""Back up a running gateway's state online; restore it only while the gateway is stopped."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.backup import GatewayRunning, backup, restore
from gateway.ingest import Envelope
from gateway.protocol.messages import Channel, ReadingBatch, Sample, TimeBase, Transport
from gateway.store.journal_reader import JournalReader
from tests.fixtures.cli import fieldgate
from tests.fixtures.gateway import gateway_config, journal_keys, running_gateway

CHANNELS = (Channel("current", "A"),)


def batch(seq: int) -> Envelope:
    samples = tuple(Sample(t=seq * 100 + i, values=(float(i),)) for i in range(10))
    msg = ReadingBatch("pump-01", 1, seq, TimeBase.UPTIME_MS, CHANNELS, samples)
    return Envelope(msg, Transport.SERIAL, 1_000_000 + seq, None)


async def test_a_backup_taken_under_ingest_is_consistent_and_restores(tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path, scoring={"enabled": False})
    async with running_gateway(cfg) as gw:

        async def ingest() -> None:
            seq = 1
            while True:
                await gw.queue.put(batch(seq))
                seq += 10
                await asyncio.sleep(0.001)

        feeder = asyncio.create_task(ingest())
        await asyncio.sleep(0.5)
        copied = await asyncio.to_thread(backup, cfg, tmp_path / "backup")
        await asyncio.sleep(0.3)
        with pytest.raises(GatewayRunning):
            restore(cfg, tmp_path / "backup")
        feeder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await feeder
    assert "journal.db" in {c.name for c in copied}
    snapshot = JournalReader(tmp_path / "backup" / "journal.db")
    saved = snapshot.reading_keys()
    snapshot.close()
    assert saved, "the backup holds readings"
    # Whole batches only: a consistent snapshot never holds part of a commit.
    assert len(saved) % 10 == 0
    assert len(journal_keys(cfg)) > len(saved)  # ingest went on after the backup

    restore(cfg, tmp_path / "backup")
    assert sorted(journal_keys(cfg)) == sorted(saved)


def test_the_commands_say_what_they_did(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'data_dir = "{tmp_path / "var"}"\n')
    (tmp_path / "var").mkdir()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute('create table t(x)')",
            str(tmp_path / "var" / "alerts.db"),
        ],
        check=True,
    )
    done = fieldgate("backup", str(tmp_path / "b"), "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert "alerts.db" in done.stdout
    again = fieldgate("backup", str(tmp_path / "b"), "-c", str(config))
    assert again.returncode == 2
    assert "exists" in again.stderr
    done = fieldgate("restore", str(tmp_path / "b"), "-c", str(config))
    assert done.returncode == 0, done.stderr


def test_node_pins_and_the_gateway_models_floors_travel_with_the_backup(tmp_path: Path) -> None:
    # Without them a restored gateway would pin node ids to whoever speaks first and accept
    # a gateway model older than one it already ran.
    cfg = gateway_config(tmp_path, scoring={"enabled": False})
    pins = cfg.data_dir / "node_pins.json"
    state = cfg.data_dir / "gateway-model" / "state.json"
    bundle = cfg.data_dir / "gateway-model" / "installed" / "b1" / "gateway_model.tflite"
    for path, text in ((pins, '{"pump-01": "serial:/dev/ttyUSB0"}'),
                       (state, '{"floors": {"pump": 7}}'), (bundle, "model bytes")):  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (cfg.data_dir / "gateway-model" / "incoming").mkdir()  # waiting work is not state

    backup(cfg, tmp_path / "backup")
    pins.write_text('{"pump-01": "serial:/dev/ttyUSB9"}')
    state.write_text('{"floors": {}}')
    bundle.parent.rename(bundle.parent.with_name("lost"))

    restored = {c.name for c in restore(cfg, tmp_path / "backup")}
    assert {"node_pins.json", "gateway-model/state.json", "gateway-model/installed"} <= restored
    assert pins.read_text() == '{"pump-01": "serial:/dev/ttyUSB0"}'
    assert state.read_text() == '{"floors": {"pump": 7}}'
    assert bundle.read_text() == "model bytes"
    assert not (tmp_path / "backup" / "plain" / "gateway-model" / "incoming").exists()
