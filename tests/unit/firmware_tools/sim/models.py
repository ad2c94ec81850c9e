"""Signed test models for the flash tests: the shipped node model, re-signed with a test key.

``tinymodels/artifacts/node_model.tflite`` is part of the repository (no ../shared data). Each
call signs a fresh manifest, so tests choose sequence, target and key freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.describe import build_manifest
from firmware_tools.signing import sign_manifest
from gateway.protocol.manifest import DEFAULT_TARGET, TARGET_CLASSES, ModelManifest
from gateway.protocol.signed_manifest import SignedManifest

NODE_MODEL = Path(__file__).resolve().parents[4] / "tinymodels" / "artifacts" / "node_model.tflite"
ARENA_BYTES = 3136  # measured for node_model (tinymodels/artifacts/node_model.json)
TARGET = DEFAULT_TARGET
SLOT_BYTES = TARGET_CLASSES[TARGET].flash_bytes
RAM_BYTES = TARGET_CLASSES[TARGET].ram_bytes


def artifact() -> bytes:
    return NODE_MODEL.read_bytes()


def raw_public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Model:
    artifact: bytes
    signed: SignedManifest

    @property
    def manifest(self) -> ModelManifest:
        return self.signed.manifest

    @property
    def cbor(self) -> bytes:
        return self.signed.to_cbor()


def signed_model(
    key: Ed25519PrivateKey,
    sequence: int,
    *,
    data: bytes | None = None,
    target: str = TARGET,
    arena_bytes: int = ARENA_BYTES,
    broken_output: bool = False,
) -> Model:
    """``data`` (default: the node model) with a manifest signed by ``key``.

    ``broken_output`` declares an output shape the model does not have: signed and intact,
    but it fails the node's self-test.
    """
    data = artifact() if data is None else data
    manifest = build_manifest(
        data,
        name="node_model",
        version=f"1.{sequence}.0",
        sequence=sequence,
        target=target,
        arena_bytes=arena_bytes,
        created_at="2025-01-01T00:00:00Z",
    )
    if broken_output:
        out = manifest.outputs[0]
        bad = type(out)(out.name, (1, 3), out.dtype, out.scale, out.zero_point)
        manifest = manifest.with_changes(outputs=(bad,))
    return Model(data, sign_manifest(manifest, key))


def padded(data: bytes, size: int) -> bytes:
    """A longer artifact (a flatbuffer tolerates trailing bytes) to get more chunks."""
    return data + bytes((i * 7) & 0xFF for i in range(size - len(data)))
