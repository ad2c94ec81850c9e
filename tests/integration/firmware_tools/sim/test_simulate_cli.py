"""``fieldgate simulate`` end to end, and the fleet's ground truth and reboots."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from typer.testing import CliRunner

from firmware_tools.sim.cli import simulate
from firmware_tools.sim.fleet import SimConfig, Simulator
from firmware_tools.sim.signals import Fault, FaultKind


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command(name="simulate")(simulate)
    app.command(name="noop")(lambda: None)  # a second command keeps "simulate" a subcommand
    return app


def test_simulate_prints_node_addresses_runs_for_duration_and_cleans_up(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli(),
        [
            *("simulate", "-n", "2", "--rate", "20", "--duration", "0.5", "--no-live"),
            *("--pty-dir", str(tmp_path), "-f", "pump-02:spikes:0:1"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"pump-01 serial {tmp_path}/ttypump-01" in result.output
    assert f"pump-02 serial {tmp_path}/ttypump-02" in result.output
    assert not list(tmp_path.iterdir()), "pty symlinks left behind"


def test_simulate_rejects_a_bad_fault_with_the_expected_format() -> None:
    result = CliRunner().invoke(cli(), ["simulate", "-f", "pump-01:melting:0:5"])
    assert result.exit_code == 2
    assert "unknown fault kind" in result.output


def test_simulate_help_explains_transports_and_faults() -> None:
    result = CliRunner().invoke(cli(), ["simulate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for word in ("--transport", "round-robin", "--fault", "cavitation", "--replay", "--model"):
        assert word in result.output


async def test_fleet_records_fault_labels_per_seq_and_counts_reboots(tmp_path: Path) -> None:
    cfg = SimConfig(
        nodes=2,
        rate_hz=50.0,
        batch_size=5,
        pty_dir=tmp_path,
        faults=(("pump-02", Fault(FaultKind.OVERHEATING, 0.2, 0.3)),),
    )
    async with Simulator(cfg) as sim:
        await sim.wait_ready()
        await sim.run_for(0.7)
        sim.nodes["pump-01"].reboot()
        await sim.run_for(0.3)
        stats = sim.stats()
        truth = {nid: node.labels_by_seq() for nid, node in sim.nodes.items()}
        boot_ids = {nid: node.logic.boot_id for nid, node in sim.nodes.items()}
    await asyncio.sleep(0)

    assert stats["pump-01"]["reboots"] == 1
    assert len({boot for boot, _ in truth["pump-01"]}) == 2  # labels from both boots
    assert set(truth["pump-01"].values()) == {0}
    overheated = [seq for (_, seq), label in truth["pump-02"].items() if label]
    assert set(truth["pump-02"].values()) == {0, int(FaultKind.OVERHEATING)}
    # 0.3 s of fault at 50 Hz, give or take the sample on each edge.
    assert 12 <= len(overheated) <= 17
    assert overheated == list(range(overheated[0], overheated[0] + len(overheated)))
    assert all(boot == boot_ids["pump-02"] for boot, _ in truth["pump-02"])
