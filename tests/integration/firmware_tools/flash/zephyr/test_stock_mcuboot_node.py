"""flash-model's image path against a stock Zephyr 4.4 MCUboot node under QEMU (mps2-an385).

The node runs MCUboot and a Zephyr application with stock img_mgmt (4 x 2048-byte buffers);
its UART is a TCP socket. This MCUboot build loads images into RAM (RAM_LOAD): every image
state write (``test`` and ``confirm`` alike) answers ENOTSUP, which flash-model must name and
not retry. The whole test/reset/confirm/rollback cycle runs on the swap build instead
(test_mcuboot_swap_node.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from smp.image_management import ImageStatesReadRequest, ImageStatesWriteRequest

from firmware_tools.flash.api import Outcome
from firmware_tools.flash.mcumgr.capabilities import NodeKind
from firmware_tools.flash.mcumgr.flasher import McuMgrFlasher
from firmware_tools.flash.mcumgr.link import McuMgrLink
from firmware_tools.flash.mcumgr.mcuboot_image import MANIFEST_TLV, wrap
from firmware_tools.flash.mcumgr.options import McuMgrOptions
from firmware_tools.flash.orchestrate import FlashOptions, flash_fleet
from firmware_tools.signing import load_private_key
from gateway.protocol.signed_manifest import read_signed
from tests.fixtures.zephyr_smp import (
    MCUBOOT_SERVER,
    QemuServer,
    application_binary,
    unavailable_reason,
)
from tests.integration.firmware_tools.flash.zephyr.conftest import NODE_MODEL, MakeModel

pytestmark = pytest.mark.usefixtures("_no_leftover_tasks")
IMAGE = McuMgrOptions(kind=NodeKind.IMAGE)


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    """The node's application binary: image 0 takes the model only appended to it."""
    path = tmp_path / "zephyr.bin"
    path.write_bytes(application_binary(*MCUBOOT_SERVER))
    return path


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


async def test_an_interrupted_upload_resumes_from_the_nodes_offset_and_test_is_enotsup(
    mcuboot_server: QemuServer,
    make_model: MakeModel,
    firmware: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Upload (interrupted, resumed from the node's offset), MCUboot's hash in slot 1, then
    the one step this RAM-load build cannot take: ``image state test`` answers ENOTSUP,
    named, and not retried."""
    model = make_model(3, size=len(NODE_MODEL))
    signed = read_signed(model.path.with_suffix(".manifest.cbor"))
    key = load_private_key(model.private_key)
    expected = wrap(model.artifact, signed, key, firmware=application_binary(*MCUBOOT_SERVER))
    assert expected.data[:4] == bytes.fromhex("3db8f396")  # MCUboot's header magic
    assert MANIFEST_TLV.to_bytes(2, "little") in expected.data

    class HostGone(Exception):
        """The host side stops mid-upload (the node keeps its upload session)."""

    def stop_after_two_chunks(done: int, _total: int) -> None:
        if done > 2 * 1900:
            raise HostGone

    options = McuMgrOptions(kind=NodeKind.IMAGE, image_firmware=firmware)
    flasher = McuMgrFlasher("mcuboot-01", mcuboot_server.address, options=options, fleet_key=key)
    caplog.set_level(logging.INFO, logger="firmware_tools.flash.mcumgr.image_path")
    try:
        with pytest.raises(HostGone):
            await flasher.upload(model.artifact, signed, stop_after_two_chunks)
    finally:
        await flasher.aclose()
    # A new run of the same upload: the node answers the first request with the offset it
    # holds, and only the rest is sent; then test (ENOTSUP on this build).
    flasher = McuMgrFlasher("mcuboot-01", mcuboot_server.address, options=options, fleet_key=key)
    try:
        [result] = await flash_fleet(
            [flasher], model.artifact, signed, options=FlashOptions(retries=3)
        )
        info = await flasher.info()
    finally:
        await flasher.aclose()
    assert "resumes image 0 at byte" in caplog.text
    assert 0 < result.bytes_sent < len(expected.data) - 2 * 1900
    new = next(s for s in info.slots if s.slot == 1)
    assert new.model_hash == expected.image_hash[:8]  # MCUboot's hash, not the file's sha256
    assert (new.model_version, new.sequence) == (model.version, 3)
    assert not new.active
    assert result.outcome is Outcome.FAILED
    assert result.attempts == 1
    assert "ENOTSUP in img state write (test) of image 0 slot 1" in result.reason
    assert "permanent" in result.reason


async def test_every_image_state_write_is_enotsup_on_this_build(mcuboot_server: QemuServer) -> None:
    """The exact requests and replies: a RAM-load MCUboot has no test or confirm at all."""
    link = McuMgrLink("mcuboot-01", mcuboot_server.address)
    await link.open()
    try:
        state = await link.request(ImageStatesReadRequest(), "img state read")
        [running] = state.body["images"]
        test = ImageStatesWriteRequest(hash=running["hash"], confirm=False)
        confirm = ImageStatesWriteRequest(confirm=True)
        replies = [await link.request(r, "img state write", check=False) for r in (test, confirm)]
    finally:
        await link.close()
    assert [r.body for r in replies] == [{"rc": 8}, {"rc": 8}]  # SMP v1 MGMT_ERR.ENOTSUP
