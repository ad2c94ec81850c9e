"""SMP over BLE: smpclient through bleak on the Bumble backend, the node's SMP GATT service on a
Bumble peripheral, both on one virtual radio (LocalRadio)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.flash.api import NodeRefused
from firmware_tools.flash.smp_flasher import SmpBleFlasher
from firmware_tools.sim.smp_ble import SmpBleLink
from firmware_tools.sim.smp_server import SmpServer
from gateway.ble import close_adapters
from gateway.ble.radio import LocalRadio
from gateway.protocol.slots import RefusalReason
from tests.unit.firmware_tools.sim.support import make_model, make_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def radio() -> AsyncIterator[LocalRadio]:
    async with LocalRadio(2) as local_radio:
        yield local_radio
        await close_adapters()  # while the controllers still exist


@contextlib.asynccontextmanager
async def ble_node(server: SmpServer, spec: str) -> AsyncIterator[SmpBleLink]:
    link = SmpBleLink(server, transport=spec, advertising_interval_ms=20.0)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(link.run(), name=f"sim:smp-ble:{server.node_id}")
        try:
            await link.ready.wait()
            yield link
        finally:
            task.cancel()


async def test_upload_test_boot_and_confirm_over_ble(tmp_path: Path, radio: LocalRadio) -> None:
    key = Ed25519PrivateKey.generate()
    factory, new = make_model(key, 1), make_model(key, 2)
    server = make_server(tmp_path, key, factory, node_id="pump-ble")
    async with ble_node(server, radio.specs[1]) as link:
        flasher = SmpBleFlasher("pump-ble", link.address, hci=radio.specs[0])
        try:
            sent = await flasher.upload(new.artifact, new.signed, lambda d, t: None)
            info = await flasher.activate(timeout_s=10)
        finally:
            await flasher.aclose()
    assert sent == len(new.artifact)
    assert info.active is not None
    assert (info.active.sequence, info.active.confirmed) == (2, True)
    assert server.store.active_artifact() == new.artifact
    # Requests larger than one ATT value arrived in pieces and were put back together.
    assert link.smp.requests >= 4
    assert server.resets == 1


async def test_refusal_over_ble_names_the_reason(tmp_path: Path, radio: LocalRadio) -> None:
    key = Ed25519PrivateKey.generate()
    server = make_server(tmp_path, key, make_model(key, 5), node_id="pump-ble")
    older = make_model(key, 4)
    async with ble_node(server, radio.specs[1]) as link:
        flasher = SmpBleFlasher("pump-ble", link.address, hci=radio.specs[0])
        try:
            with pytest.raises(NodeRefused) as refused:
                await flasher.upload(older.artifact, older.signed, lambda d, t: None)
        finally:
            await flasher.aclose()
    assert refused.value.reason is RefusalReason.OLD_SEQUENCE
    assert server.store.transfer is None
