"""Signed test models for the flash CLI unit tests (no TensorFlow, no TFLM: arena given)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.describe import build_manifest
from firmware_tools.signing import sign_manifest
from gateway.protocol.signed_manifest import SignedManifest
from tests.unit.firmware_tools.conftest import build_fc_tflite


def signed_model(
    *,
    version: str = "1.1.0",
    sequence: int = 2,
    target: str = "cortex-m4-256k",
    arena_bytes: int = 2048,
    key: Ed25519PrivateKey | None = None,
    seed: int = 0,
) -> tuple[bytes, SignedManifest]:
    artifact = build_fc_tflite(seed=seed)
    manifest = build_manifest(
        artifact,
        name="pump",
        version=version,
        sequence=sequence,
        target=target,
        arena_bytes=arena_bytes,
        created_at="2026-01-01T00:00:00Z",
    )
    return artifact, sign_manifest(manifest, key or Ed25519PrivateKey.generate())


@pytest.fixture
def model() -> tuple[bytes, SignedManifest]:
    return signed_model()
