"""SMP over a real pty: smpclient on the host, the simulated node's SMP server on the far end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.flash.api import NodeRefused, RefusalReason
from firmware_tools.flash.smp_flasher import SmpSerialFlasher
from firmware_tools.sim.smp_serial_link import SmpSerialLink
from firmware_tools.sim.smp_server import SmpServer
from tests.unit.smp.support import Model, make_model, make_server

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
            sent = await flasher.upload(new.artifact, new.signed, lambda d, t: progress.append((d, t)))
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
