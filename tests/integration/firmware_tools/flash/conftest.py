"""A mixed fleet of simulated nodes with A/B model slots, and the real `flash-model` CLI.

Eight nodes, two per transport: our binary transfer on serial ptys and through mosquitto
(the simulator's own nodes), SMP on serial ptys (the nodes' "mgmt port") and SMP over BLE on
one Bumble virtual radio. The CLI runs as a separate process (the console script), so it
reaches the BLE nodes through the radio's HCI-over-TCP controller, as it would a USB dongle.

Models are the repository's node model padded with trailing zeros (TFLM ignores bytes past
the flatbuffer) to give distinct, valid files, signed here with a throw-away fleet key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware_tools.describe import build_manifest
from firmware_tools.signing import generate_keypair, load_private_key, sign_manifest, write_signed
from firmware_tools.sim.fleet import SimConfig, Simulator
from firmware_tools.sim.selftest import node_self_test
from firmware_tools.sim.slots import SlotStore
from firmware_tools.sim.smp_ble import SmpBleLink
from firmware_tools.sim.smp_serial_link import SmpSerialLink
from firmware_tools.sim.smp_server import SmpServer
from gateway.ble import close_adapters
from gateway.ble.radio import LocalRadio
from gateway.protocol.manifest import DEFAULT_TARGET, TARGET_CLASSES
from gateway.protocol.signed_manifest import load_public_key
from tests.fixtures.servers import Mosquitto

REPO = Path(__file__).resolve().parents[4]
BASE_MODEL = (REPO / "tinymodels" / "artifacts" / "node_model.tflite").read_bytes()
ARENA_BYTES = 3136  # tinymodels/artifacts/node_model.json
CLI = Path(sys.executable).parent / "flash-model"
BAUD = 115_200


@dataclass(frozen=True)
class ModelFile:
    path: Path
    artifact: bytes
    version: str
    sequence: int


def write_model(
    directory: Path,
    name: str,
    key_path: Path,
    sequence: int,
    *,
    target: str = DEFAULT_TARGET,
    bad_output_shape: bool = False,
    pad: int | None = None,
    arena_bytes: int = ARENA_BYTES,
) -> ModelFile:
    """The node model as version 1.<sequence>.0, signed, on disk with its manifests.

    ``pad`` trailing zero bytes (default 16 × sequence) make a distinct, larger file.
    """
    artifact = BASE_MODEL + bytes(16 * sequence if pad is None else pad)
    manifest = build_manifest(
        artifact,
        name="node_model",
        version=f"1.{sequence}.0",
        sequence=sequence,
        target=target,
        arena_bytes=arena_bytes,
        created_at="2026-01-01T00:00:00Z",
    )
    if bad_output_shape:
        # Intact and signed, but not what it promises: only the node's self-test sees it.
        out = dataclasses.replace(manifest.outputs[0], shape=(1, 8))
        manifest = manifest.with_changes(outputs=(out,))
    path = directory / f"{name}.tflite"
    path.write_bytes(artifact)
    write_signed(sign_manifest(manifest, load_private_key(key_path)), path)
    return ModelFile(path, artifact, manifest.version, sequence)


@dataclass
class Fleet:
    """The running nodes, their slot stores and an inventory naming them."""

    inventory: Path
    pubkey: Path
    factory_model: ModelFile
    stores: dict[str, SlotStore]
    specs: dict[str, str]  # node id -> --to spec
    transports: dict[str, str]


async def run_cli(*args: str, timeout_s: float = 45.0) -> tuple[int, str]:
    """Run the installed `flash-model` console script; (exit status, stdout + stderr)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = await asyncio.create_subprocess_exec(
        str(CLI),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def read_report(path: Path) -> dict[str, dict[str, object]]:
    return {row["node_id"]: row for row in json.loads(path.read_text())}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys")


StartFleet = Callable[[], contextlib.AbstractAsyncContextManager[Fleet]]


@pytest.fixture
def start_fleet(
    tmp_path: Path, keys: tuple[Path, Path], mosquitto: Mosquitto, mqtt_prefix: str
) -> StartFleet:
    return lambda: running_fleet(tmp_path, keys, mosquitto, mqtt_prefix)


@contextlib.asynccontextmanager
async def running_fleet(
    tmp_path: Path, keys: tuple[Path, Path], mosquitto: Mosquitto, mqtt_prefix: str
) -> AsyncIterator[Fleet]:
    """Start the eight nodes; everything is stopped on exit.

    A context manager used inside the test body rather than an async fixture, so the nodes
    are gone before the task-leak guard looks.
    """
    priv, pub = keys
    models = tmp_path / "models"
    models.mkdir()
    factory = write_model(models, "factory", priv, 1)
    target = TARGET_CLASSES[DEFAULT_TARGET]
    stores: dict[str, SlotStore] = {}
    specs: dict[str, str] = {}
    transports: dict[str, str] = {}
    cfg = SimConfig(
        nodes=4,
        transports=("serial", "mqtt"),
        node_prefix="pump",
        rate_hz=2.0,
        broker_url=mosquitto.url,
        site=mqtt_prefix,
        baud=BAUD,
        pty_dir=tmp_path,
        slots_dir=tmp_path / "slots",
        fleet_public_key=pub,
        target=DEFAULT_TARGET,
        factory_model=factory.path,
    )

    def smp_server(node_id: str) -> SmpServer:
        store = SlotStore.open(
            tmp_path / "slots" / node_id,
            public_key=load_public_key(pub),
            target=DEFAULT_TARGET,
            slot_bytes=target.flash_bytes,
            ram_bytes=target.ram_bytes,
        )
        store.install_factory(
            factory.artifact, factory.path.with_suffix(".manifest.cbor").read_bytes()
        )
        stores[node_id] = store
        return SmpServer(store, node_self_test(target.ram_bytes), node_id=node_id)

    async with contextlib.AsyncExitStack() as stack:
        radio = await stack.enter_async_context(LocalRadio(3))
        stack.push_async_callback(close_adapters)
        [hci, *_] = await radio.serve_tcp()
        sim = await stack.enter_async_context(Simulator(cfg))
        tg = await stack.enter_async_context(asyncio.TaskGroup())
        smp_serial = [
            SmpSerialLink(smp_server(f"pump-0{i}"), baud=BAUD, pty_dir=tmp_path) for i in (5, 6)
        ]
        smp_ble = [
            SmpBleLink(
                smp_server(f"pump-0{i}"), transport=radio.specs[i - 6], advertising_interval_ms=20.0
            )
            for i in (7, 8)
        ]
        tasks = [
            tg.create_task(link.run(), name=f"sim:smp-serial:{link.server.node_id}")
            for link in smp_serial
        ]
        tasks += [
            tg.create_task(link.run(), name=f"sim:smp-ble:{link.node_id}") for link in smp_ble
        ]
        await sim.wait_ready()
        for link in smp_ble:
            await link.ready.wait()
        for node_id, (kind, address) in sim.addresses().items():
            stores[node_id] = sim.xfer_nodes[node_id].store
            transports[node_id] = kind
            specs[node_id] = (
                f"serial:{address}={node_id}"
                if kind == "serial"
                else f"{mosquitto.url}/{mqtt_prefix}/{node_id}"
            )
        for serial_link in smp_serial:
            node_id = serial_link.server.node_id
            specs[node_id] = f"smp-serial:{serial_link.address}={node_id}"
            transports[node_id] = "smp-serial"
        for ble_link in smp_ble:
            specs[ble_link.node_id] = f"smp-ble:{ble_link.address}={ble_link.node_id}"
            transports[ble_link.node_id] = "smp-ble"
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(
            _inventory_toml(
                specs,
                transports=transports,
                pub=pub,
                hci=hci,
                broker=mosquitto.url,
                site=mqtt_prefix,
            )
        )
        try:
            yield Fleet(inventory, pub, factory, stores, specs, transports)
        finally:
            for task in tasks:
                task.cancel()


def _inventory_toml(
    specs: dict[str, str],
    *,
    transports: dict[str, str],
    pub: Path,
    hci: str,
    broker: str,
    site: str,
) -> str:
    lines = [
        "[defaults]",
        f'pubkey = "{pub}"',
        "parallel = 8",
        "retries = 2",
        f"baud = {BAUD}",
        f'ble_hci = "{hci}"',
        "activate_timeout_s = 20",
        "",
    ]
    for node_id in sorted(specs):
        kind = transports[node_id]
        lines += ["[[node]]", f'id = "{node_id}"', f'transport = "{kind}"']
        if kind == "mqtt":
            lines += [f'address = "{broker}"', f'site = "{site}"']
        else:
            address = specs[node_id].split(":", 1)[1].rsplit("=", 1)[0]
            lines.append(f'address = "{address}"')
        lines += [f'target = "{DEFAULT_TARGET}"', ""]
    return "\n".join(lines)
