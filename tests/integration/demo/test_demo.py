"""The demo runs the real gateway with simulated nodes, even with no broker installed; its
injected fault raises alerts where the fault is and clears them after; SIGTERM ends it cleanly
with a summary."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from gateway.demo.run import run_demo
from gateway.demo.scenario import Scenario
from gateway.events import AlertEventKind
from gateway.store.baselines import BaselineStore, baselines_path_for
from gateway.store.journal_reader import JournalReader

FAULT_START_S = 8.0
FAULT_S = 5.0


@pytest.mark.parametrize("embedded", [False, True], ids=["mosquitto", "embedded-amqtt"])
async def test_demo_ingests_from_serial_mqtt_and_ble_nodes(tmp_path: Path, embedded: bool) -> None:
    result = await run_demo(2, 20.0, tmp_path, seconds=5.0, embedded_broker=embedded)
    reader = JournalReader(result.gateway.config.journal_path)
    try:
        nodes = {row.node_id: row for row in reader.nodes()}
    finally:
        reader.close()
    assert {row.transport for row in nodes.values()} == {"serial", "mqtt", "ble"}
    for row in nodes.values():
        assert row.received > 10, f"{row.node_id} delivered too little"
        assert row.lost == 0
    assert result.readings == sum(row.received for row in nodes.values())


async def test_injected_fault_raises_alerts_inside_it_and_clears_them_after(
    tmp_path: Path,
) -> None:
    # 4 s of calibration at 20 Hz (80 rows), then pump-01's valve closes for 5 s.
    scenario = Scenario.parse([f"pump-01:valve_closed:{FAULT_START_S:g}:{FAULT_S:g}"], 4.0)
    result = await run_demo(
        2, 20.0, tmp_path, seconds=FAULT_START_S + FAULT_S + 5.0, ble_nodes=0, scenario=scenario
    )
    events = result.alerts.events
    assert result.alerts.missed == 0

    def sim_s(at_ms: int) -> float:
        return (at_ms - result.sim_t0_ms) / 1000

    story = [
        (e.kind.value, e.alert.rule, e.alert.node_id, round(sim_s(e.at_ms), 1)) for e in events
    ]
    assert {e.alert.node_id for e in events} == {"pump-01"}, story
    for rule in ("pressure_high", "anomaly"):
        kinds = [e.kind for e in events if e.alert.rule == rule]
        assert kinds == [AlertEventKind.RAISED, AlertEventKind.CLEARED], story
        raised, cleared = (e for e in events if e.alert.rule == rule)
        assert raised.alert.alert_id == cleared.alert.alert_id
        # The valve takes 1 s (20 % of the fault) to close; the rules debounce 1-2 s. Alert
        # times are sample times as the journal mapped them (never earlier than taken; 0.25 s
        # slack for rounding). Seen here: raised at 9.4 / 10.1 s, cleared at 13.0 / 13.5 s.
        end_s = FAULT_START_S + FAULT_S
        assert FAULT_START_S - 0.25 <= sim_s(raised.at_ms) <= FAULT_START_S + 4.0, story
        assert end_s - 0.25 <= sim_s(cleared.at_ms) <= end_s + 4.0, story
    pressure = next(e for e in events if e.alert.rule == "pressure_high")
    assert pressure.alert.severity.name == "CRITICAL"
    assert pressure.alert.value is not None
    assert pressure.alert.value >= 1.25

    # Both nodes were scored by the gateway model once calibrated; only pump-01 alerted.
    pipeline = result.gateway.pipeline
    assert pipeline is not None
    for node_id in ("pump-01", "pump-02"):
        scores = pipeline.fusion.scores(node_id)
        assert scores is not None, node_id
        assert scores.gateway is not None, node_id
    summary = result.summary()
    assert "alerts raised 2, cleared 2, still open 0" in summary
    # Their baselines are kept beside the journal, so a restarted gateway need not recalibrate.
    stored = BaselineStore(baselines_path_for(result.gateway.config.journal_path)).load()
    assert {b.node_id for b in stored} == {"pump-01", "pump-02"}


async def test_sigterm_stops_the_demo_cleanly_with_a_summary(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "demo", "--nodes", "1", "--ble-nodes", "0",
        "--rate", "10", "--data-dir", str(data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    try:
        journal = data_dir / "journal.db"
        async with asyncio.timeout(30):
            while not journal.exists():
                await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "fieldgate demo:" in text, text
    assert "messages from 1 nodes" in text, text
    assert "alerts raised 0" in text
    # The broker the demo started (its config lives in the data dir) went with it.
    assert _processes_mentioning(data_dir) == []


def _processes_mentioning(path: Path) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile
        if str(path).encode() in cmdline:
            found.append(int(pid))
    return found


async def test_a_rerun_on_the_same_data_dir_adds_new_data_and_scores_from_stored_baselines(
    tmp_path: Path,
) -> None:
    # Like `fieldgate demo --data-dir D` twice: each run gets its own seed (new boot ids), so
    # the second run's readings are new, and its nodes are scored on the baselines the first
    # run stored instead of calibrating again.
    quiet = Scenario.parse([], 2.0)
    first = await run_demo(2, 20.0, tmp_path, seconds=5.0, ble_nodes=0, scenario=quiet, seed=1)
    assert first.gateway.pipeline.scorer.baseline_stats.saved == 2
    second = await run_demo(2, 20.0, tmp_path, seconds=3.0, ble_nodes=0, scenario=quiet, seed=2)
    stats = second.gateway.pipeline.scorer.baseline_stats
    assert stats.loaded == 2
    assert stats.restored == 2
    assert stats.saved == 0  # no node calibrated again
    reader = JournalReader(second.gateway.config.journal_path)
    try:
        nodes = {row.node_id: row for row in reader.nodes()}
    finally:
        reader.close()
    assert set(nodes) == {"pump-01", "pump-02"}
    for row in nodes.values():
        assert row.duplicates == 0, f"{row.node_id}: the rerun repeated the first run's data"
