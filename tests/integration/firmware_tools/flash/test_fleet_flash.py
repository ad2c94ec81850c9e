"""`flash-model flash/info/rollback` end to end against simulated nodes on four transports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from firmware_tools.signing import generate_keypair
from tests.integration.firmware_tools.flash.conftest import (
    Fleet,
    StartFleet,
    read_report,
    run_cli,
    write_model,
)

pytestmark = pytest.mark.timeout(90)

NODES = [f"pump-0{i}" for i in range(1, 9)]


async def test_eight_nodes_on_four_transports_are_flashed_in_parallel(
    start_fleet: StartFleet, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    async with start_fleet() as fleet:
        new = write_model(tmp_path / "models", "pump-v2", keys[0], 2)
        report = tmp_path / "report.json"
        code, out = await run_cli(
            "flash", str(new.path), "--fleet", str(fleet.inventory), "--report", str(report)
        )
        assert code == 0, out
        rows = read_report(report)
        assert sorted(rows) == NODES
        assert {fleet.transports[n] for n in NODES} == {"serial", "mqtt", "smp-serial", "smp-ble"}
        for node_id, row in rows.items():
            assert row["transport"] == fleet.transports[node_id]
            assert row["outcome"] == "flashed", row
            assert (row["old_version"], row["new_version"]) == ("1.1.0", "1.2.0")
            assert row["bytes_sent"] == len(new.artifact)
            assert row["attempts"] == 1
        # Each node runs the new model, confirmed, and keeps the old one in its other slot.
        for node_id in NODES:
            store = fleet.stores[node_id]
            assert store.active_artifact() == new.artifact, node_id
            slots = {s.model_version: s for s in store.info()}
            assert slots["1.2.0"].active
            assert slots["1.2.0"].confirmed
            assert not slots["1.1.0"].active
        # The table names every node with old -> new and the outcome.
        for node_id in NODES:
            assert node_id in out
        assert out.count("1.1.0 → 1.2.0") == 8

        # Running it again sends nothing: every node already runs the model.
        code, out = await run_cli(
            "flash", str(new.path), "--fleet", str(fleet.inventory), "--report", str(report)
        )
        assert code == 0, out
        again = read_report(report)
        assert {r["outcome"] for r in again.values()} == {"already_current"}
        assert {r["bytes_sent"] for r in again.values()} == {0}


async def test_info_shows_slots_and_rollback_returns_to_the_previous_model(
    start_fleet: StartFleet, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    async with start_fleet() as fleet:
        new = write_model(tmp_path / "models", "pump-v2", keys[0], 2)
        targets = ["pump-02", "pump-05", "pump-07"]  # mqtt, smp-serial, smp-ble
        to = [arg for node_id in targets for arg in ("--to", fleet.specs[node_id])]
        code, out = await run_cli("flash", str(new.path), *to, "--ble-hci", _hci(fleet))
        assert code == 0, out

        for node_id in ["pump-01", *targets]:  # pump-01 (serial) was left alone
            code, out = await run_cli(
                "info", fleet.specs[node_id], "--ble-hci", _hci(fleet), "--json"
            )
            assert code == 0, out
            doc = _json_tail(out)
            assert doc["node_id"] == node_id
            active = [s for s in doc["slots"] if s["active"]]
            assert len(active) == 1
            expected = "1.1.0" if node_id == "pump-01" else "1.2.0"
            assert (active[0]["model_version"], active[0]["confirmed"]) == (expected, True)

        for node_id in targets:
            code, out = await run_cli("rollback", node_id, "--fleet", str(fleet.inventory))
            assert code == 0, out
            assert f"{node_id}: rolled back 1.2.0 → 1.1.0" in out
            store = fleet.stores[node_id]
            assert store.active_artifact() == fleet.factory_model.artifact
            assert store.active_manifest() is not None
            assert store.active_manifest().version == "1.1.0"  # type: ignore[union-attr]

        # pump-01 has no previous model to go back to: refused, exit 1, saying so.
        code, out = await run_cli("rollback", fleet.specs["pump-01"])
        assert code == 1
        assert "pump-01" in out


async def test_dry_run_reports_fit_and_estimates_without_sending(
    start_fleet: StartFleet, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    async with start_fleet() as fleet:
        new = write_model(tmp_path / "models", "pump-v2", keys[0], 2)
        report = tmp_path / "dry.json"
        code, out = await run_cli(
            "flash",
            str(new.path),
            "--fleet",
            str(fleet.inventory),
            "--dry-run",
            "--report",
            str(report),
        )
        assert code == 0, out
        rows = read_report(report)
        assert sorted(rows) == NODES
        for row in rows.values():
            assert row["budget_from"] == "node"
            assert row["fits_slot"] is True
            assert row["fits_arena"] is True
            assert row["verdict"] == "would flash"
            assert row["model_bytes"] == len(new.artifact)
            assert 0 < row["compressed_bytes"] < len(new.artifact)  # type: ignore[operator]
        assert rows["pump-01"]["estimated_s"] == pytest.approx(len(new.artifact) / 10_368, abs=0.01)
        assert "informational" in out
        for node_id in NODES:
            assert fleet.stores[node_id].active_artifact() == fleet.factory_model.artifact
            assert fleet.stores[node_id].transfer is None


async def test_refusals_rollbacks_and_unreachable_nodes_exit_3_with_reasons(
    start_fleet: StartFleet, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    async with start_fleet() as fleet:
        models = tmp_path / "models"
        wrong_class = write_model(models, "m0", keys[0], 2, target="cortex-m0-32k")
        broken = write_model(models, "broken", keys[0], 3, bad_output_shape=True)
        report = tmp_path / "report.json"

        # Wrong target class: refused before a byte is sent, naming the node's class.
        code, out = await run_cli(
            "flash",
            str(wrong_class.path),
            "--to",
            fleet.specs["pump-01"],
            "--to",
            "mqtt://127.0.0.1:1/nowhere/pump-99",  # nothing listens on port 1
            "--retries",
            "1",
            "--report",
            str(report),
        )
        assert code == 3, out
        rows = read_report(report)
        assert rows["pump-01"]["outcome"] == "refused"
        assert "the node is cortex-m4-256k" in str(rows["pump-01"]["reason"])
        assert rows["pump-01"]["bytes_sent"] == 0
        assert rows["pump-99"]["outcome"] == "unreachable"
        assert rows["pump-99"]["attempts"] == 2
        assert "pump-99: node unreachable" in str(rows["pump-99"]["reason"])
        assert "pump-99:" in out
        assert "transfers resume" in out

        # An arena larger than the node's RAM: no space, refused before sending.
        huge = write_model(models, "huge", keys[0], 2, arena_bytes=200_000)
        code, out = await run_cli(
            "flash", str(huge.path), "--to", fleet.specs["pump-06"], "--report", str(report)
        )
        assert code == 3, out
        row = read_report(report)["pump-06"]
        assert row["outcome"] == "refused"
        assert "needs a 200000-byte arena but the node has 131072" in str(row["reason"])
        assert row["bytes_sent"] == 0

        # Signed with another key than the fleet's: the nodes themselves refuse it.
        other_priv, _ = generate_keypair(tmp_path / "other-keys")
        forged = write_model(models, "forged", other_priv, 4)
        code, out = await run_cli(
            "flash",
            str(forged.path),
            "--to",
            fleet.specs["pump-02"],
            "--to",
            fleet.specs["pump-05"],
            "--report",
            str(report),
        )
        assert code == 3, out
        for node_id, row in read_report(report).items():
            assert row["outcome"] == "refused", row
            assert "(bad_signature)" in str(row["reason"])
            assert "fleet key" in str(row["reason"])
            assert fleet.stores[node_id].active_artifact() == fleet.factory_model.artifact

        # A model that fails the node's self-test: sent, tried, reverted by the node itself.
        code, out = await run_cli(
            "flash", str(broken.path), "--to", fleet.specs["pump-03"], "--report", str(report)
        )
        assert code == 3, out
        row = read_report(report)["pump-03"]
        assert row["outcome"] == "rolled_back"
        assert row["bytes_sent"] == len(broken.artifact)
        assert "self_test_failed" in str(row["reason"])
        assert fleet.stores["pump-03"].active_artifact() == fleet.factory_model.artifact


def _hci(fleet: Fleet) -> str:
    for line in fleet.inventory.read_text().splitlines():
        if line.startswith("ble_hci"):
            return line.split('"')[1]
    raise AssertionError("no ble_hci in the inventory")


def _json_tail(out: str) -> dict[str, Any]:
    doc = json.loads(out[out.index("{") :])
    assert isinstance(doc, dict)
    return doc
