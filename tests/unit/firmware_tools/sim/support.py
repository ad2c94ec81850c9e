"""Shared by the SMP tests: a fleet key, signed model variants and a simulated SMP node.

Models are the repository's node model (``tinymodels/artifacts``), padded with trailing
zero bytes to give distinct files (TFLM ignores bytes past the flatbuffer) and signed here
with a throw-away fleet key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.describe import build_manifest
from firmware_tools.signing import sign_manifest
from firmware_tools.sim.selftest import node_self_test
from firmware_tools.sim.slots import SlotStore
from firmware_tools.sim.smp_server import SmpServer
from gateway.protocol.manifest import TARGET_CLASSES
from gateway.protocol.signed_manifest import SignedManifest

REPO = Path(__file__).resolve().parents[4]
BASE_MODEL = (REPO / "tinymodels" / "artifacts" / "node_model.tflite").read_bytes()
TARGET = "cortex-m4-64k"
ARENA_BYTES = 3136


@dataclass(frozen=True)
class Model:
    artifact: bytes
    signed: SignedManifest

    @property
    def sha256(self) -> bytes:
        return bytes.fromhex(self.signed.manifest.sha256)


def make_model(
    key: Ed25519PrivateKey,
    sequence: int,
    *,
    pad: int | None = None,
    target: str = TARGET,
    bad_output_shape: bool = False,
) -> Model:
    """The node model as version 1.<sequence>.0; ``pad`` zero bytes make it a distinct file."""
    artifact = BASE_MODEL + bytes(16 * sequence if pad is None else pad)
    manifest = build_manifest(
        artifact,
        name="node_model",
        version=f"1.{sequence}.0",
        sequence=sequence,
        target=target,
        arena_bytes=ARENA_BYTES,
        created_at="2026-01-01T00:00:00Z",
    )
    if bad_output_shape:
        # Signed and intact, but it does not produce what its manifest promises: the node's
        # self-test catches that only once the model runs.
        out = manifest.outputs[0]
        manifest = manifest.with_changes(outputs=(dataclasses.replace(out, shape=(1, 8)),))
    return Model(artifact, sign_manifest(manifest, key))


def make_server(
    directory: Path,
    key: Ed25519PrivateKey,
    factory: Model,
    node_id: str = "pump-01",
    **kwargs: object,
) -> SmpServer:
    """A node whose slot store holds ``factory`` as its confirmed model."""
    target = TARGET_CLASSES[TARGET]
    store = SlotStore.open(
        directory,
        public_key=key.public_key(),
        target=TARGET,
        slot_bytes=target.flash_bytes,
        ram_bytes=target.ram_bytes,
    )
    store.install_factory(factory.artifact, factory.signed.to_cbor())
    return SmpServer(
        store,
        node_self_test(target.ram_bytes),
        node_id=node_id,
        **kwargs,  # type: ignore[arg-type]
    )
