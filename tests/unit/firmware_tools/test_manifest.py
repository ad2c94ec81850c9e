"""Model manifests: fields, canonical CBOR, JSON, and building one from an artifact."""

from __future__ import annotations

import hashlib

import cbor2
import pytest

from firmware_tools.describe import build_manifest
from gateway.errors import ModelError
from gateway.protocol.manifest import ModelManifest, TensorSpec


def _manifest(**changes: object) -> ModelManifest:
    base = ModelManifest(
        name="pump-anomaly",
        version="1.4.0",
        sequence=7,
        sha256="ab" * 32,
        size_bytes=2712,
        inputs=(TensorSpec("in", (1, 8), "int8", 0.00390625, -128),),
        outputs=(TensorSpec("out", (1, 3), "int8", 0.0039001591503620148, -128),),
        ops=("FULLY_CONNECTED", "SOFTMAX"),
        arena_bytes=2000,
        target="cortex-m4-256k",
        created_at="2026-11-23T09:00:00Z",
    )
    return base.with_changes(**changes) if changes else base


def test_json_and_cbor_round_trip_to_an_equal_manifest() -> None:
    m = _manifest()
    assert ModelManifest.from_json(m.to_json()) == m
    assert ModelManifest.from_cbor(m.to_cbor()) == m


def test_cbor_is_canonical_so_re_encoding_gives_the_same_bytes() -> None:
    m = _manifest()
    encoded = m.to_cbor()
    decoded = cbor2.loads(encoded)
    assert list(decoded) == sorted(decoded, key=lambda k: (len(k), k))  # RFC 8949 length-first
    shuffled = dict(reversed(list(decoded.items())))
    assert cbor2.dumps(shuffled, canonical=True) == encoded
    assert ModelManifest.from_json(m.to_json()).to_cbor() == encoded


def test_float_scales_survive_cbor_exactly() -> None:
    m = _manifest()
    assert ModelManifest.from_cbor(m.to_cbor()).outputs[0].scale == 0.0039001591503620148


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("version", "1.4", "semantic version"),
        ("name", "bad name!", "name"),
        ("sequence", 0, "sequence"),
        ("sha256", "xyz", "sha256"),
    ],
)
def test_invalid_fields_are_rejected_saying_which(
    field: str, value: object, complaint: str
) -> None:
    with pytest.raises(ModelError, match=complaint):
        _manifest(**{field: value})


def test_unknown_manifest_format_is_rejected_with_upgrade_hint() -> None:
    d = _manifest().to_dict()
    d["format"] = 99
    with pytest.raises(ModelError, match="upgrade"):
        ModelManifest.from_dict(d)


def test_model_hash_is_the_first_8_bytes_of_the_sha256() -> None:
    m = _manifest(sha256=hashlib.sha256(b"x").hexdigest())
    assert m.model_hash == hashlib.sha256(b"x").digest()[:8]


def test_build_manifest_reads_the_artifact_and_measures_the_arena(fc_tflite: bytes) -> None:
    m = build_manifest(fc_tflite, name="fc", version="0.1.0", sequence=1)
    assert m.sha256 == hashlib.sha256(fc_tflite).hexdigest()
    assert m.size_bytes == len(fc_tflite)
    assert m.ops == ("FULLY_CONNECTED",)
    (spec,) = m.inputs
    assert spec.scale == pytest.approx(0.05)
    assert spec == TensorSpec("input", (1, 4), "int8", spec.scale, 0)
    assert m.outputs[0].shape == (1, 2)
    assert m.outputs[0].zero_point == -3
    assert 512 < m.arena_bytes < 64 * 1024
    assert m.arena_bytes % 16 == 0
    assert m.created_at.endswith("Z")


def test_build_manifest_rejects_an_unknown_target(fc_tflite: bytes) -> None:
    with pytest.raises(ModelError, match="cortex-m4-256k"):
        build_manifest(fc_tflite, name="fc", version="0.1.0", sequence=1, target="z80")


def test_build_manifest_rejects_bytes_that_are_not_tflite() -> None:
    with pytest.raises(ModelError, match="not a TFLite model"):
        build_manifest(b"\x00" * 64, name="fc", version="0.1.0", sequence=1, arena_bytes=1)
