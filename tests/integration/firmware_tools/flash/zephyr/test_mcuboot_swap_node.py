"""flash-model's image path through a whole MCUboot cycle on a stock Zephyr 4.4 node (QEMU).

The node is the sdist's ``qemu_cortex_m0`` build: MCUboot in swap-using-offset mode, one image
(the application, with stock img_mgmt; 4 x 384-byte buffers) on an emulated nRF51 whose flash
lives as long as the QEMU process (an ``os reset`` keeps it, a kill loses it; the fixture
writes the factory hex once, see ``QemuServer``). Image 0 is the
application, so the model travels bundled after the application's own binary
(``image_firmware``): MCUboot swaps the bundle in, boots the application, and the model sits
after it in the slot. Nothing of ours runs on the node.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_tools.flash.api import Outcome
from firmware_tools.flash.mcumgr.capabilities import ImageSlot, NodeKind
from firmware_tools.flash.mcumgr.flasher import McuMgrFlasher
from firmware_tools.flash.mcumgr.mcuboot_image import MODEL_OFFSET_TLV, McubootImage, wrap
from firmware_tools.flash.mcumgr.options import McuMgrOptions
from firmware_tools.flash.orchestrate import FlashOptions, flash_fleet, report_json
from firmware_tools.signing import load_private_key
from gateway.protocol.signed_manifest import read_signed
from tests.fixtures.zephyr_smp import (
    SWAP_SERVER,
    NativeSimServer,
    QemuServer,
    application_binary,
    unavailable_reason,
)
from tests.integration.firmware_tools.flash.conftest import run_cli
from tests.integration.firmware_tools.flash.zephyr.conftest import KillMidUpload, MakeModel, Model

pytestmark = pytest.mark.usefixtures("_no_leftover_tasks")


@pytest.fixture
def swap_server(tmp_path: Path) -> Iterator[QemuServer]:
    reason = unavailable_reason(*SWAP_SERVER)
    if reason is not None:
        pytest.skip(reason)
    server = QemuServer(*SWAP_SERVER, workdir=tmp_path / "swap-node")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    """The node's application binary, as its build wrote zephyr.bin."""
    path = tmp_path / "zephyr.bin"
    path.write_bytes(application_binary(*SWAP_SERVER))
    return path


def inventory(tmp_path: Path, server: QemuServer, firmware: Path) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(
        f'[[node]]\nid = "m0-01"\ntransport = "smp-serial"\naddress = "{server.address}"\n'
        f'smp_kind = "image"\nimage_number = 0\nimage_firmware = "{firmware.name}"\n'
    )
    return path


def bundle(model: Model, firmware: Path) -> McubootImage:
    signed = read_signed(model.path.with_suffix(".manifest.cbor"))
    key = load_private_key(model.private_key)
    return wrap(model.artifact, signed, key, firmware=firmware.read_bytes())


async def flasher_for(server: QemuServer, firmware: Path, model: Model) -> McuMgrFlasher:
    return McuMgrFlasher(
        "m0-01",
        server.address,
        options=McuMgrOptions(kind=NodeKind.IMAGE, image_firmware=firmware),
        fleet_key=load_private_key(model.private_key),
    )


def test_a_bundle_is_the_application_then_the_model_at_the_offset_it_names(
    make_model: MakeModel, firmware: Path
) -> None:
    model = make_model(1)
    image = bundle(model, firmware)
    app = firmware.read_bytes()
    payload = image.data[0x200:]
    assert payload[: len(app)] == app
    assert image.model_offset % 16 == 0
    assert image.model_offset >= len(app)
    assert payload[image.model_offset : image.model_offset + len(model.artifact)] == model.artifact
    tlv = MODEL_OFFSET_TLV.to_bytes(2, "little") + (4).to_bytes(2, "little")
    assert tlv + image.model_offset.to_bytes(4, "little") in image.data


async def test_a_bare_model_is_never_sent_to_the_application_image(
    swap_server: QemuServer, make_model: MakeModel
) -> None:
    model = make_model(1)
    signed = read_signed(model.path.with_suffix(".manifest.cbor"))
    flasher = McuMgrFlasher(
        "m0-01", swap_server.address, options=McuMgrOptions(kind=NodeKind.IMAGE)
    )
    try:
        [result] = await flash_fleet(
            [flasher], model.artifact, signed, options=FlashOptions(retries=3)
        )
        [app] = (await flasher.info()).slots
    finally:
        await flasher.aclose()
    assert result.outcome is Outcome.FAILED
    assert result.attempts == 1
    assert "image 0 is the node's application" in result.reason
    assert "image_firmware" in result.reason
    assert result.bytes_sent == 0
    assert (app.slot, app.active, app.confirmed) == (0, True, True)


async def test_flash_tests_resets_confirms_and_rollback_returns_to_the_previous_image(
    swap_server: QemuServer, make_model: MakeModel, firmware: Path, tmp_path: Path
) -> None:
    fleet = inventory(tmp_path, swap_server, firmware)
    v1, v2 = make_model(1), make_model(2)
    factory = await _active(swap_server, firmware, v1)

    # Flash through the CLI: upload into slot 1, test, reset (MCUboot swaps it in), confirm.
    report = tmp_path / "report.json"
    code, out = await run_cli(
        "flash", str(v1.path), "--fleet", str(fleet), "--pubkey", str(v1.pubkey),
        "--image-key", str(v1.private_key), "--report", str(report),
    )  # fmt: skip
    assert code == 0, out
    [row] = json.loads(report.read_text())
    assert row["outcome"] == "flashed", row
    assert row["bytes_sent"] == len(bundle(v1, firmware).data)
    code, out = await run_cli("info", "m0-01", "--fleet", str(fleet), "--json")
    [running] = [s for s in json.loads(out)["slots"] if s["active"]]
    assert running["slot"] == "A"  # MCUboot's primary slot
    assert running["confirmed"]
    assert (running["model_version"], running["sequence"]) == (v1.version, 1)
    assert running["model_hash"] == bundle(v1, firmware).image_hash[:8].hex()

    flasher = await flasher_for(swap_server, firmware, v2)
    try:
        # Confirmed: a reset keeps it (MCUboot swaps nothing back).
        await flasher.capabilities()
        await flasher.reset_and_wait(30.0)
        path = flasher._image()  # noqa: SLF001 - the path's own steps, one by one
        [after_reset] = [s for s in await path.state() if s.active]
        # v2 uploaded and test-booted, not confirmed: MCUboot runs it once.
        signed = read_signed(v2.path.with_suffix(".manifest.cbor"))
        await flasher.upload(v2.artifact, signed, lambda _d, _t: None)
        on_test = await flasher._image().test_boot(flasher, timeout_s=30.0)  # noqa: SLF001
    finally:
        await flasher.aclose()
    assert after_reset.hash == bundle(v1, firmware).image_hash
    assert (on_test.slot, on_test.active, on_test.confirmed) == (0, True, False)
    assert on_test.hash == bundle(v2, firmware).image_hash

    # Rollback: v1 runs again, confirmed (MCUboot reverts the image on test at the reset).
    code, out = await run_cli("rollback", "m0-01", "--fleet", str(fleet))
    assert code == 0, out
    now = await _active(swap_server, firmware, v1)
    assert now.hash == bundle(v1, firmware).image_hash
    assert now.confirmed
    assert now.hash != factory.hash


async def test_a_node_killed_mid_upload_fails_alone_and_a_rerun_completes(
    swap_server: QemuServer,
    fs_server: NativeSimServer,
    make_model: MakeModel,
    firmware: Path,
) -> None:
    model = make_model(1)
    signed = read_signed(model.path.with_suffix(".manifest.cbor"))
    options = FlashOptions(retries=1, backoff_initial_s=0.1, backoff_max_s=0.2)

    def fleet() -> list[McuMgrFlasher]:
        return [
            McuMgrFlasher(
                "m0-01",
                swap_server.address,
                timeout_s=2.0,
                options=McuMgrOptions(kind=NodeKind.IMAGE, image_firmware=firmware),
            ),
            McuMgrFlasher("fs-01", fs_server.address, timeout_s=2.0),
        ]

    flashers = fleet()
    observer = KillMidUpload("m0-01", swap_server, after=2000)
    try:
        results = await flash_fleet(
            flashers, model.artifact, signed, options=options, observer=observer
        )
    finally:
        for f in flashers:
            await f.aclose()
    assert observer.killed
    report = {r["node_id"]: r for r in json.loads(report_json(results))}
    assert report["fs-01"]["outcome"] == "flashed"
    assert report["m0-01"]["outcome"] == Outcome.UNREACHABLE.value
    assert "m0-01" in report["m0-01"]["reason"]
    assert report["m0-01"]["attempts"] == 2

    # The node is powered again (an emulated nRF51's flash does not outlive its process:
    # it boots its factory image); the rerun flashes it and leaves fs-01 as it is.
    await asyncio.to_thread(swap_server.start)
    flashers = fleet()
    try:
        results = await flash_fleet(flashers, model.artifact, signed, options=options)
    finally:
        for f in flashers:
            await f.aclose()
    outcomes = {r.node_id: r.outcome for r in results}
    assert outcomes == {"m0-01": Outcome.FLASHED, "fs-01": Outcome.ALREADY_CURRENT}
    running = await _active(swap_server, firmware, model)
    assert running.hash == bundle(model, firmware).image_hash
    assert running.confirmed


async def _active(server: QemuServer, firmware: Path, model: Model) -> ImageSlot:
    flasher = await flasher_for(server, firmware, model)
    try:
        await flasher.capabilities()
        path = flasher._image()  # noqa: SLF001 - read the raw slot state
        return next(s for s in await path.state() if s.active)
    finally:
        await flasher.aclose()
