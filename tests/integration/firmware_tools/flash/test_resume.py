"""A transfer cut by an unplugged cable is retried by `flash-model flash` and resumes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from firmware_tools.sim.fleet import SimConfig, Simulator
from gateway.protocol.manifest import DEFAULT_TARGET
from tests.integration.firmware_tools.flash.conftest import BAUD, read_report, run_cli, write_model

pytestmark = pytest.mark.timeout(60)

PAD = 20_000  # ~2.4 s at 115200 baud: time to pull the cable mid-transfer


async def test_an_unplugged_serial_node_is_retried_and_the_upload_resumes(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    priv, pub = keys
    models = tmp_path / "models"
    models.mkdir()
    factory = write_model(models, "factory", priv, 1)
    new = write_model(models, "big", priv, 2, pad=PAD)
    cfg = SimConfig(
        nodes=1,
        transports=("serial",),
        baud=BAUD,
        pty_dir=tmp_path,
        slots_dir=tmp_path / "slots",
        fleet_public_key=pub,
        target=DEFAULT_TARGET,
        factory_model=factory.path,
    )
    report = tmp_path / "report.json"
    async with Simulator(cfg) as sim:
        await sim.wait_ready()
        link = sim.serial_link("pump-01")
        store = sim.xfer_nodes["pump-01"].store
        cli = asyncio.create_task(
            run_cli(
                "flash",
                str(new.path),
                "--to",
                f"serial:{link.address}=pump-01",
                "--retries",
                "4",
                "--report",
                str(report),
            ),
            name="flash-model",
        )
        cut_at = len(new.artifact) // 3
        async with asyncio.timeout(20):
            while store.transfer is None or store.transfer[1] < cut_at:
                await asyncio.sleep(0.02)
        assert store.transfer is not None
        offset_at_cut = store.transfer[1]
        link.unplug()
        await asyncio.sleep(0.3)
        link.replug()
        code, out = await cli
    assert code == 0, out
    row = read_report(report)["pump-01"]
    assert row["outcome"] == "flashed"
    assert row["attempts"] >= 2  # type: ignore[operator]
    # Resumed, not restarted: far fewer than the bytes sent before the cut were sent twice.
    assert row["bytes_sent"] < len(new.artifact) + offset_at_cut // 2  # type: ignore[operator]
    assert store.active_artifact() == new.artifact
    assert store.active_manifest() is not None
