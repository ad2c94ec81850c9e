"""Flash simulated nodes with our binary transfer over a real pty and a real mosquitto.

The nodes are the simulator's, with their A/B slots in a temporary directory and the test's
fleet key; the model is the shipped node model re-signed with that key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.flash.api import NodeFlasher, NodeRefused
from firmware_tools.flash.mqtt_flasher import MqttFlasher
from firmware_tools.flash.serial_flasher import SerialFlasher
from firmware_tools.sim.fleet import SimConfig, Simulator
from firmware_tools.sim.serial_link import PtySerialLink
from firmware_tools.sim.slots import SlotStore
from gateway.protocol.manifest import sha256_hex
from gateway.protocol.signed_manifest import SignedManifest
from gateway.protocol.slots import NodeInfo, RefusalReason
from tests.fixtures.servers import Mosquitto
from tests.unit.firmware_tools.sim.models import Model, raw_public_key, signed_model

NODE = "pump-01"
CHUNK = 1024


class Interrupted(Exception):
    """The test pulls the plug on the transfer."""


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def v1(key: Ed25519PrivateKey) -> Model:
    return signed_model(key, 1)


@pytest.fixture(scope="module")
def v2(key: Ed25519PrivateKey) -> Model:
    return signed_model(key, 2)


@asynccontextmanager
async def fleet(
    tmp_path: Path, kit: Kit
) -> AsyncIterator[tuple[Simulator, Callable[[], NodeFlasher]]]:
    key, v1, transport, broker = kit.key, kit.v1, kit.transport, kit.broker
    factory = tmp_path / "factory.tflite"
    factory.write_bytes(v1.artifact)
    factory.with_suffix(".manifest.cbor").write_bytes(v1.cbor)
    cfg = SimConfig(
        nodes=1,
        transports=(transport,),
        broker_url=broker or "mqtt://127.0.0.1:1",
        site="flash" + tmp_path.name[-8:].replace("_", ""),
        slots_dir=tmp_path / "slots",
        fleet_public_key=raw_public_key(key),
        factory_model=factory,
        status_interval_ms=60_000,
    )
    async with Simulator(cfg) as sim:
        await sim.wait_ready()

        def new_flasher() -> NodeFlasher:
            if transport == "serial":
                return SerialFlasher(NODE, sim.serial_link(NODE).slave_path, timeout_s=2.0)
            return MqttFlasher(NODE, broker, site=cfg.site, timeout_s=2.0)

        yield sim, new_flasher
        sim.stop()


def store_of(sim: Simulator) -> SlotStore:
    return sim.xfer_nodes[NODE].store


def active(info: NodeInfo) -> tuple[int, bool]:
    assert info.active is not None
    return info.active.sequence, info.active.confirmed


def runs_a_valid_model(store: SlotStore, model: Model) -> bool:
    data = store.active_artifact()
    return data is not None and sha256_hex(data) == model.manifest.sha256


@dataclass(frozen=True)
class Kit:
    key: Ed25519PrivateKey
    v1: Model  # the factory image
    v2: Model  # the update
    transport: str = "serial"
    broker: str = ""


@pytest.fixture
def kit(key: Ed25519PrivateKey, v1: Model, v2: Model) -> Kit:
    return Kit(key, v1, v2)


@pytest.fixture(params=["serial", "mqtt"])
def wire_kit(request: pytest.FixtureRequest, kit: Kit) -> Kit:
    if request.param == "serial":
        return kit
    server = cast(Mosquitto, request.getfixturevalue("mosquitto"))
    return Kit(kit.key, kit.v1, kit.v2, "mqtt", server.url)


async def test_a_model_is_uploaded_verified_self_tested_confirmed_and_rolled_back(
    tmp_path: Path, wire_kit: Kit
) -> None:
    v1, v2 = wire_kit.v1, wire_kit.v2
    async with fleet(tmp_path, wire_kit) as (sim, new_flasher):
        flasher = new_flasher()
        try:
            assert active(await flasher.info()) == (1, True)
            seen: list[tuple[int, int]] = []
            sent = await flasher.upload(v2.artifact, v2.signed, lambda d, t: seen.append((d, t)))
            assert sent == len(v2.artifact)
            assert seen[-1] == (len(v2.artifact), len(v2.artifact))
            assert active(await flasher.activate(timeout_s=5)) == (2, True)
            assert runs_a_valid_model(store_of(sim), v2)
            assert {s.sequence for s in sim.nodes[NODE].logic.make_status(0).slots} == {1, 2}
            assert active(await flasher.rollback()) == (1, True)
            assert runs_a_valid_model(store_of(sim), v1)
        finally:
            await flasher.aclose()


@pytest.mark.parametrize("boundary", [1, 2, 3, 4])
async def test_a_transfer_killed_at_a_chunk_boundary_leaves_the_old_model_and_resumes(
    tmp_path: Path, wire_kit: Kit, boundary: int
) -> None:
    v1, v2 = wire_kit.v1, wire_kit.v2
    assert len(v2.artifact) > 4 * CHUNK  # five chunks: four boundaries
    async with fleet(tmp_path, wire_kit) as (sim, new_flasher):
        store = store_of(sim)

        def pull_the_plug(done: int, _total: int) -> None:
            if done >= boundary * CHUNK:
                raise Interrupted

        flasher = new_flasher()
        try:
            with pytest.raises(Interrupted):
                await flasher.upload(v2.artifact, v2.signed, pull_the_plug)
        finally:
            await flasher.aclose()
        assert runs_a_valid_model(store, v1)
        assert active(store_info(store)) == (1, True)

        resumed_from: list[int] = []
        flasher = new_flasher()
        try:
            sent = await flasher.upload(
                v2.artifact, v2.signed, lambda d, _t: resumed_from.append(d)
            )
            assert runs_a_valid_model(store, v1)  # verified, not yet booted
            assert resumed_from[0] >= boundary * CHUNK
            assert sent == len(v2.artifact) - resumed_from[0]
            assert active(await flasher.activate(timeout_s=5)) == (2, True)
        finally:
            await flasher.aclose()
        assert runs_a_valid_model(store, v2)


def store_info(store: SlotStore) -> NodeInfo:
    return NodeInfo(NODE, store.target, store.slot_bytes, store.ram_bytes, store.info())


class _Unsigned:
    """Stands in for a SignedManifest: a BEGIN with no signed manifest at all."""

    manifest: Any = None

    def to_cbor(self) -> bytes:
        return b""


def _tampered(model: Model) -> tuple[bytes, SignedManifest]:
    data = bytearray(model.artifact)
    data[200] ^= 0x01
    return bytes(data), model.signed


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda k, v2: _tampered(v2), RefusalReason.BAD_HASH),
        (lambda k, v2: (v2.artifact, cast(SignedManifest, _Unsigned())), RefusalReason.UNSIGNED),
        (
            lambda k, v2: (v2.artifact, signed_model(Ed25519PrivateKey.generate(), 2).signed),
            RefusalReason.BAD_SIGNATURE,
        ),
        (
            lambda k, v2: (v2.artifact, signed_model(k, 2, target="esp32-s3").signed),
            RefusalReason.WRONG_TARGET,
        ),
        (lambda k, v2: (v2.artifact, signed_model(k, 1).signed), RefusalReason.OLD_SEQUENCE),
    ],
    ids=["tampered", "unsigned", "wrong-key", "wrong-class", "older-sequence"],
)
async def test_the_node_refuses_bad_models_over_serial_and_accepts_none_of_them(
    tmp_path: Path,
    kit: Kit,
    make: Callable[[Ed25519PrivateKey, Model], tuple[bytes, SignedManifest]],
    reason: RefusalReason,
) -> None:
    v1 = kit.v1
    artifact, signed = make(kit.key, kit.v2)
    async with fleet(tmp_path, kit) as (sim, new_flasher):
        flasher = new_flasher()
        try:
            with pytest.raises(NodeRefused) as refused:
                await flasher.upload(artifact, signed, lambda _d, _t: None)
            assert refused.value.reason is reason
            info = await flasher.info()
        finally:
            await flasher.aclose()
        assert [(s.slot, s.sequence, s.active, s.confirmed) for s in info.slots] == [
            (0, 1, True, True)
        ]
        assert store_of(sim).ready_manifest() is None
        assert runs_a_valid_model(store_of(sim), v1)


async def test_a_model_failing_its_self_test_is_rolled_back_by_the_node(
    tmp_path: Path, kit: Kit
) -> None:
    v1 = kit.v1
    broken = signed_model(kit.key, 2, broken_output=True)
    async with fleet(tmp_path, kit) as (sim, new_flasher):
        flasher = new_flasher()
        try:
            await flasher.upload(broken.artifact, broken.signed, lambda _d, _t: None)
            with pytest.raises(NodeRefused) as refused:
                await flasher.activate(timeout_s=5)
            assert refused.value.reason is RefusalReason.SELF_TEST_FAILED
            info = await flasher.info()
        finally:
            await flasher.aclose()
        assert active(info) == (1, True)
        assert [s.confirmed for s in info.slots if s.slot == 1] == [False]
        assert runs_a_valid_model(store_of(sim), v1)


async def test_the_emulated_serial_line_paces_what_the_host_writes_to_the_node() -> None:
    """The node takes bytes no faster than 115200 baud (10 bits a byte) allows."""
    from gateway.protocol.framing import encode_frame
    from gateway.protocol.xfer import ChunkAck, encode

    link = PtySerialLink("pace-01", baud=115_200)
    frame = encode_frame(encode(ChunkAck(0)))  # a transfer frame the node ignores (no slots)
    count = 5760 // len(frame)
    flasher = SerialFlasher("pace-01", link.slave_path)
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(link.run(lambda _m: None), name="sim:pace-01:link")
            await link.ready.wait()
            started = time.monotonic()
            for _ in range(count):
                await flasher._send(encode(ChunkAck(0)))  # raw frames, on purpose  # noqa: SLF001 - raw frames: the public API sends only well-formed requests
            while link.stats.bad_in < count:
                await asyncio.sleep(0.01)
            elapsed = time.monotonic() - started
            task.cancel()
    finally:
        await flasher.aclose()
        link.close()
    line_s = count * len(frame) * 10 / 115_200
    assert elapsed >= 0.95 * line_s, f"{count * len(frame)} bytes in {elapsed:.3f} s"
    assert elapsed < 2 * line_s + 0.5
