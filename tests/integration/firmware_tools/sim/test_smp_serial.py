"""SMP over a real pty: smpclient on the host, the simulated node's SMP server on the far end."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from smp.header import GroupId
from smpclient import SMPClient
from smpclient.exceptions import SMPUploadError
from smpclient.transport.serial import SMPSerialTransport

from firmware_tools.flash.api import NodeRefused
from firmware_tools.flash.smp_flasher import SmpSerialFlasher
from firmware_tools.sim.smp_serial_link import SmpSerialLink
from firmware_tools.sim.smp_server import SmpServer
from gateway.protocol.slots import RefusalReason
from gateway.protocol.smp_profile import MODEL_IMAGE, REFUSAL_CODES
from tests.unit.firmware_tools.sim.support import Model, make_model, make_server

pytestmark = pytest.mark.timeout(60)
FAST_BAUD = 1_000_000  # paced like a wire, just a fast one: these tests are about behaviour


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def factory(key: Ed25519PrivateKey) -> Model:
    return make_model(key, 1)


@contextlib.asynccontextmanager
async def serial_node(server: SmpServer, baud: int = FAST_BAUD) -> AsyncIterator[SmpSerialLink]:
    link = SmpSerialLink(server, baud=baud)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(link.run(), name=f"sim:smp-serial:{server.node_id}")
        try:
            yield link
        finally:
            task.cancel()


async def test_upload_test_boot_and_confirm_over_a_pty(
    tmp_path: Path, key: Ed25519PrivateKey, factory: Model
) -> None:
    server = make_server(tmp_path, key, factory)
    new = make_model(key, 2)
    progress: list[tuple[int, int]] = []
    async with serial_node(server) as link:
        flasher = SmpSerialFlasher("pump-01", link.address, baud=FAST_BAUD)
        try:
            before = await flasher.info()
            sent = await flasher.upload(
                new.artifact, new.signed, lambda d, t: progress.append((d, t))
            )
            after = await flasher.activate(timeout_s=10)
        finally:
            await flasher.aclose()
    assert before.active is not None
    assert before.active.sequence == 1
    assert sent == len(new.artifact)
    assert progress[-1] == (len(new.artifact), len(new.artifact))
    assert after.active is not None
    assert (after.active.sequence, after.active.confirmed) == (2, True)
    assert after.active.model_hash == new.signed.manifest.model_hash
    assert server.store.active_artifact() == new.artifact
    assert server.resets == 1


async def test_self_test_failure_reverts_to_the_old_model(
    tmp_path: Path, key: Ed25519PrivateKey, factory: Model
) -> None:
    server = make_server(tmp_path, key, factory)
    broken = make_model(key, 2, bad_output_shape=True)
    async with serial_node(server) as link:
        flasher = SmpSerialFlasher("pump-01", link.address, baud=FAST_BAUD)
        try:
            await flasher.upload(broken.artifact, broken.signed, lambda d, t: None)
            with pytest.raises(NodeRefused) as refused:
                await flasher.activate(timeout_s=10)
            info = await flasher.info()
        finally:
            await flasher.aclose()
    assert refused.value.reason is RefusalReason.SELF_TEST_FAILED
    assert info.active is not None
    assert info.active.sequence == 1
    assert info.active.confirmed
    assert server.store.active_artifact() == factory.artifact


class _Interrupt(Exception):
    """Stands for the host going away between two chunks."""


@pytest.mark.parametrize("chunks_before_cut", [0, 1, 2, 3, 4])
async def test_an_interrupted_upload_resumes_from_the_nodes_offset(
    tmp_path: Path, key: Ed25519PrivateKey, factory: Model, chunks_before_cut: int
) -> None:
    server = make_server(tmp_path, key, factory)
    new = make_model(key, 2)
    total = len(new.artifact)
    seen: list[int] = []

    def cut(done: int, _total: int) -> None:
        seen.append(done)
        if len(seen) > chunks_before_cut:  # seen[0] is the session opening, offset 0
            raise _Interrupt

    async with serial_node(server) as link:
        first = SmpSerialFlasher("pump-01", link.address, baud=FAST_BAUD, buf_size=1024)
        try:
            with pytest.raises(_Interrupt):
                await first.upload(new.artifact, new.signed, cut)
        finally:
            await first.aclose()
        stored = seen[-1]
        # Cut mid-transfer, the node still runs its old model and keeps what it received.
        assert server.store.active_artifact() == factory.artifact
        assert server.store.transfer is not None
        assert server.store.transfer[1] == stored

        second = SmpSerialFlasher("pump-01", link.address, baud=FAST_BAUD, buf_size=1024)
        resumed: list[int] = []
        try:
            sent = await second.upload(new.artifact, new.signed, lambda d, t: resumed.append(d))
            info = await second.activate(timeout_s=10)
        finally:
            await second.aclose()
    assert resumed[0] == stored
    assert sent == total - stored
    assert info.active is not None
    assert info.active.sequence == 2
    assert server.store.active_artifact() == new.artifact


def _tampered_bytes(key: Ed25519PrivateKey) -> Model:
    good = make_model(key, 2)
    flipped = bytearray(good.artifact)
    flipped[100] ^= 0x01
    return Model(bytes(flipped), good.signed)


def _tampered_manifest(key: Ed25519PrivateKey) -> Model:
    good = make_model(key, 2)
    edited = good.signed.manifest.with_changes(sequence=99)
    return Model(
        good.artifact, dataclasses.replace(good.signed, manifest=edited, signed_bytes=None)
    )


REFUSALS = {
    "tampered model": (_tampered_bytes, RefusalReason.BAD_HASH),
    "tampered manifest": (_tampered_manifest, RefusalReason.BAD_SIGNATURE),
    "wrong key": (
        lambda _k: make_model(Ed25519PrivateKey.generate(), 2),
        RefusalReason.BAD_SIGNATURE,
    ),
    "wrong class": (
        lambda k: make_model(k, 2, target="cortex-m7-512k"),
        RefusalReason.WRONG_TARGET,
    ),
    "older sequence": (lambda k: make_model(k, 1, pad=32), RefusalReason.OLD_SEQUENCE),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_node_refuses_bad_models_with_the_right_reason(
    tmp_path: Path, key: Ed25519PrivateKey, factory: Model, case: str
) -> None:
    build, reason = REFUSALS[case]
    model = build(key)
    server = make_server(tmp_path, key, factory)
    async with serial_node(server) as link:
        flasher = SmpSerialFlasher("pump-01", link.address, baud=FAST_BAUD)
        try:
            with pytest.raises(NodeRefused) as refused:
                await flasher.upload(model.artifact, model.signed, lambda d, t: None)
            info = await flasher.info()
        finally:
            await flasher.aclose()
    assert refused.value.reason is reason
    assert refused.value.node_id == "pump-01"
    # Nothing accepted: the node runs its factory model and holds no other.
    assert [(s.sequence, s.active, s.confirmed) for s in info.slots] == [(1, True, True)]
    assert server.store.transfer is None
    assert server.store.ready_manifest() is None


async def test_an_unsigned_image_from_a_stock_mcumgr_upload_is_refused(
    tmp_path: Path, key: Ed25519PrivateKey, factory: Model
) -> None:
    server = make_server(tmp_path, key, factory)
    unsigned = make_model(key, 2).artifact
    async with serial_node(server) as link:
        client = SMPClient(SMPSerialTransport(baudrate=FAST_BAUD), link.address, timeout_s=5)
        await client.connect()
        try:
            with pytest.raises(SMPUploadError) as failed:
                async for _off in client.upload(unsigned, slot=MODEL_IMAGE):
                    pass
        finally:
            await client.disconnect()
    response = failed.value.args[0]
    assert response.err.group == GroupId.IMAGE_MANAGEMENT
    assert response.err.rc == REFUSAL_CODES[RefusalReason.UNSIGNED]
    assert server.store.transfer is None


async def test_rollback_makes_the_previous_confirmed_model_active_again(
    tmp_path: Path, key: Ed25519PrivateKey, factory: Model
) -> None:
    server = make_server(tmp_path, key, factory)
    new = make_model(key, 2)
    async with serial_node(server) as link:
        flasher = SmpSerialFlasher("pump-01", link.address, baud=FAST_BAUD)
        try:
            await flasher.upload(new.artifact, new.signed, lambda d, t: None)
            await flasher.activate(timeout_s=10)
            info = await flasher.rollback()
        finally:
            await flasher.aclose()
    assert info.active is not None
    assert (info.active.sequence, info.active.confirmed) == (1, True)
    assert server.store.active_artifact() == factory.artifact


async def test_a_later_run_activates_the_model_an_earlier_run_uploaded(
    tmp_path: Path, key: Ed25519PrivateKey, factory: Model
) -> None:
    server = make_server(tmp_path, key, factory)
    new = make_model(key, 2)
    async with serial_node(server) as link:
        uploader = SmpSerialFlasher("pump-01", link.address, baud=FAST_BAUD)
        try:
            await uploader.upload(new.artifact, new.signed, lambda d, t: None)
        finally:
            await uploader.aclose()
        activator = SmpSerialFlasher("pump-01", link.address, baud=FAST_BAUD)
        try:
            info = await activator.activate(timeout_s=10)
        finally:
            await activator.aclose()
    assert info.active is not None
    assert (info.active.sequence, info.active.confirmed) == (2, True)
