"""flash-model's image path against a stock Zephyr 4.4 MCUboot node under QEMU (mps2-an385).

The node runs MCUboot and a Zephyr application with stock img_mgmt (4 x 2048-byte buffers);
its UART is a TCP socket. This MCUboot build loads images into RAM (RAM_LOAD), so it has no
test swap: ``image state test`` answers ENOTSUP, which flash-model must name and not retry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_tools.flash.api import Outcome
from firmware_tools.flash.mcumgr.capabilities import NodeKind
from firmware_tools.flash.mcumgr.flasher import McuMgrFlasher
from firmware_tools.flash.mcumgr.mcuboot_image import MANIFEST_TLV, wrap
from firmware_tools.flash.mcumgr.options import McuMgrOptions
from firmware_tools.flash.orchestrate import FlashOptions, flash_fleet
from firmware_tools.signing import load_private_key
from gateway.protocol.signed_manifest import read_signed
from tests.fixtures.zephyr_smp import MCUBOOT_SERVER, QemuServer, unavailable_reason
from tests.integration.firmware_tools.flash.zephyr.conftest import NODE_MODEL, MakeModel

pytestmark = pytest.mark.usefixtures("_no_leftover_tasks")
IMAGE = McuMgrOptions(kind=NodeKind.IMAGE)


@pytest.fixture
def mcuboot_server(tmp_path: Path) -> Iterator[QemuServer]:
    reason = unavailable_reason(*MCUBOOT_SERVER)
    if reason is not None:
        pytest.skip(reason)
    server = QemuServer(*MCUBOOT_SERVER, workdir=tmp_path / "mcuboot-node")
    server.start()
    yield server
    server.stop()


async def test_info_reports_the_image_path_and_the_running_application(
    mcuboot_server: QemuServer,
) -> None:
    flasher = McuMgrFlasher("mcuboot-01", mcuboot_server.address, options=IMAGE)
    try:
        info = await flasher.info()
    finally:
        await flasher.aclose()
    assert info.path.startswith("stock img group with MCUboot slots")
    assert "buf 2048 x 4" in info.path
    [app] = info.slots
    assert (app.slot, app.active, app.confirmed) == (0, True, True)
    # Left to itself, a node with both fs and img groups gets the fs path.
    auto = McuMgrFlasher("mcuboot-01", mcuboot_server.address)
    try:
        assert (await auto.info()).path.startswith("stock fs group")
    finally:
        await auto.aclose()


async def test_upload_puts_a_signed_mcuboot_image_in_slot_1_and_checks_mcuboots_hash(
    mcuboot_server: QemuServer, make_model: MakeModel, tmp_path: Path
) -> None:
    model = make_model(3, size=len(NODE_MODEL))
    signed = read_signed(model.path.with_suffix(".manifest.cbor"))
    key = load_private_key(model.private_key)
    expected = wrap(model.artifact, signed, key, non_bootable=False)
    assert expected.data[:4] == bytes.fromhex("3db8f396")  # MCUboot's header magic
    assert MANIFEST_TLV.to_bytes(2, "little") in expected.data

    flasher = McuMgrFlasher("mcuboot-01", mcuboot_server.address, options=IMAGE, fleet_key=key)
    seen: list[int] = []
    try:
        sent = await flasher.upload(model.artifact, signed, lambda d, _t: seen.append(d))
        info = await flasher.info()
    finally:
        await flasher.aclose()
    assert sent == len(expected.data)
    assert seen[-1] == len(expected.data)
    new = next(s for s in info.slots if s.slot == 1)
    assert new.model_hash == expected.image_hash[:8]  # MCUboot's hash, not the file's sha256
    assert (new.model_version, new.sequence) == (model.version, 3)
    assert not new.active


async def test_an_interrupted_image_upload_resumes_from_the_nodes_offset(
    mcuboot_server: QemuServer, make_model: MakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    model = make_model(4, size=len(NODE_MODEL))
    signed = read_signed(model.path.with_suffix(".manifest.cbor"))

    class HostGone(Exception):
        """The host side stops mid-upload (the node keeps its upload session)."""

    def stop_after_two_chunks(done: int, _total: int) -> None:
        if done > 2 * 1900:
            raise HostGone

    flasher = McuMgrFlasher("mcuboot-01", mcuboot_server.address, options=IMAGE)
    image_len = len(wrap(model.artifact, signed, None, non_bootable=False).data)
    caplog.set_level(logging.INFO, logger="firmware_tools.flash.mcumgr.image_path")
    try:
        with pytest.raises(HostGone):
            await flasher.upload(model.artifact, signed, stop_after_two_chunks)
        # A fresh start of the same upload: the node answers the first request with the
        # offset it holds, and only the rest is sent.
        flasher._image_path = None  # noqa: SLF001 - forget the session as a new run would
        sent = await flasher.upload(model.artifact, signed, lambda _d, _t: None)
    finally:
        await flasher.aclose()
    assert "resumes image 0 at byte" in caplog.text
    assert 0 < sent < image_len - 2 * 1900


async def test_a_build_without_test_swap_is_named_and_not_retried(
    mcuboot_server: QemuServer, make_model: MakeModel
) -> None:
    model = make_model(5, size=len(NODE_MODEL))
    signed = read_signed(model.path.with_suffix(".manifest.cbor"))
    flasher = McuMgrFlasher("mcuboot-01", mcuboot_server.address, options=IMAGE)
    try:
        [result] = await flash_fleet(
            [flasher], model.artifact, signed, options=FlashOptions(retries=3)
        )
    finally:
        await flasher.aclose()
    assert result.outcome is Outcome.FAILED
    assert result.attempts == 1
    assert "ENOTSUP in img state write (test) of image 0 slot 1" in result.reason
    assert "permanent" in result.reason
