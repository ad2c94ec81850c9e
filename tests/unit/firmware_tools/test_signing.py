"""Ed25519-signed manifests: what verifies and, above all, what does not."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from firmware_tools.cli import app
from firmware_tools.describe import build_manifest
from firmware_tools.signing import generate_keypair, load_private_key, sign_manifest, write_signed
from gateway.errors import ModelError
from gateway.protocol.signed_manifest import (
    SignedManifest,
    VerificationError,
    load_public_key,
    read_signed,
    verify_signed,
)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signed(fc_tflite: bytes, key: Ed25519PrivateKey) -> SignedManifest:
    manifest = build_manifest(fc_tflite, name="fc", version="1.0.0", sequence=3, arena_bytes=2048)
    return sign_manifest(manifest, key)


def test_a_signed_manifest_verifies_with_the_public_key_alone(
    signed: SignedManifest, fc_tflite: bytes, key: Ed25519PrivateKey
) -> None:
    assert verify_signed(signed, fc_tflite, key.public_key()) == signed.manifest


@pytest.mark.parametrize("encoding", ["cbor", "json"])
def test_signed_manifest_verifies_after_a_trip_through_its_file(
    encoding: str, signed: SignedManifest, fc_model_file: Path, key: Ed25519PrivateKey
) -> None:
    json_path, cbor_path = write_signed(signed, fc_model_file)
    loaded = read_signed(cbor_path if encoding == "cbor" else json_path)
    manifest = verify_signed(loaded, fc_model_file.read_bytes(), key.public_key())
    assert manifest == signed.manifest


def test_an_edited_json_manifest_fails_the_signature_check(
    signed: SignedManifest, fc_tflite: bytes, key: Ed25519PrivateKey
) -> None:
    doc = json.loads(signed.to_json())
    doc["manifest"]["sequence"] = 99  # an attacker bumping anti-rollback
    with pytest.raises(VerificationError, match="altered") as info:
        verify_signed(SignedManifest.from_json(json.dumps(doc)), fc_tflite, key.public_key())
    assert info.value.check == "signature"


def test_an_edited_cbor_envelope_fails_the_signature_check(
    signed: SignedManifest, fc_tflite: bytes, key: Ed25519PrivateKey
) -> None:
    envelope = signed.to_cbor()
    tampered = envelope.replace(b"1.0.0", b"9.0.0")
    assert tampered != envelope
    with pytest.raises(VerificationError) as info:
        verify_signed(SignedManifest.from_cbor(tampered), fc_tflite, key.public_key())
    assert info.value.check == "signature"


def test_a_tampered_artifact_fails_the_sha256_check(
    signed: SignedManifest, fc_tflite: bytes, key: Ed25519PrivateKey
) -> None:
    tampered = bytearray(fc_tflite)
    tampered[-20] ^= 0x01
    with pytest.raises(VerificationError, match="sha256") as info:
        verify_signed(signed, bytes(tampered), key.public_key())
    assert info.value.check == "sha256"


def test_a_truncated_artifact_fails_the_size_check(
    signed: SignedManifest, fc_tflite: bytes, key: Ed25519PrivateKey
) -> None:
    with pytest.raises(VerificationError, match="bytes but the manifest says") as info:
        verify_signed(signed, fc_tflite[:-1], key.public_key())
    assert info.value.check == "size"


def test_the_wrong_public_key_is_rejected(signed: SignedManifest, fc_tflite: bytes) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(VerificationError, match="signed by key") as info:
        verify_signed(signed, fc_tflite, other)
    assert info.value.check == "key"


def test_another_keys_signature_claiming_our_key_id_is_rejected(
    signed: SignedManifest, fc_tflite: bytes, key: Ed25519PrivateKey
) -> None:
    impostor = sign_manifest(signed.manifest, Ed25519PrivateKey.generate())
    forged = SignedManifest(signed.manifest, impostor.signature, signed.key_id)
    with pytest.raises(VerificationError) as info:
        verify_signed(forged, fc_tflite, key.public_key())
    assert info.value.check == "signature"


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path / "keys")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    key = load_private_key(priv)
    assert load_public_key(pub).public_bytes_raw() == key.public_key().public_bytes_raw()
    with pytest.raises(ModelError, match="--force"):
        generate_keypair(tmp_path / "keys")


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    priv, _ = generate_keypair(tmp_path)
    priv.chmod(0o644)
    with pytest.raises(ModelError, match="chmod 600"):
        load_private_key(priv)


def test_cli_keygen_sign_verify_and_tamper_detection(tmp_path: Path, fc_model_file: Path) -> None:
    runner = CliRunner()
    keys = tmp_path / "keys"
    result = runner.invoke(app, ["keygen", "--out", str(keys)])
    assert result.exit_code == 0, result.output
    priv, pub = keys / "model-signing.key", keys / "model-signing.pub"

    model = str(fc_model_file)
    result = runner.invoke(app, ["sign", model, "--key", str(priv), "--version", "2.1.0"])
    assert result.exit_code == 0, result.output
    assert "sequence 1" in result.output
    result = runner.invoke(app, ["sign", model, "--key", str(priv), "--version", "2.1.1"])
    assert "sequence 2" in result.output  # monotonic without being told

    result = runner.invoke(app, ["verify", model, "--pubkey", str(pub)])
    assert result.exit_code == 0, result.output
    assert "OK fc 2.1.1 sequence 2" in result.output

    data = bytearray(fc_model_file.read_bytes())
    data[-20] ^= 0xFF
    fc_model_file.write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", model, "--pubkey", str(pub)])
    assert result.exit_code == 1
    assert "sha256" in result.output


def test_cli_verify_without_a_manifest_says_how_to_make_one(
    tmp_path: Path, fc_model_file: Path
) -> None:
    generate_keypair(tmp_path)
    result = CliRunner().invoke(
        app, ["verify", str(fc_model_file), "--pubkey", str(tmp_path / "model-signing.pub")]
    )
    assert result.exit_code == 1
    assert "flash-model sign" in result.output


def test_a_manifest_without_family_or_runtime_keeps_its_canonical_bytes(
    signed: SignedManifest, fc_tflite: bytes, key: Ed25519PrivateKey
) -> None:
    # Manifests signed before the two optional fields existed must still verify: the fields
    # are written only when set, so the canonical CBOR is what it was.
    assert "family" not in signed.manifest.to_dict()
    assert "runtime_sha256" not in signed.manifest.to_dict()
    assert signed.manifest.family_name == "fc"
    old_style = SignedManifest.from_json(signed.to_json())
    assert verify_signed(old_style, fc_tflite, key.public_key()).runtime_sha256 is None


def test_family_and_runtime_hash_are_signed_and_cannot_be_edited(
    fc_tflite: bytes, key: Ed25519PrivateKey
) -> None:
    manifest = build_manifest(
        fc_tflite, name="fc-v2", version="2.0.0", sequence=4, arena_bytes=0,
        family="fc", runtime=b'{"threshold_factor": 1.0}',
    )  # fmt: skip
    signed = sign_manifest(manifest, key)
    loaded = SignedManifest.from_cbor(signed.to_cbor())
    assert verify_signed(loaded, fc_tflite, key.public_key()) == manifest
    assert manifest.family_name == "fc"
    for field, forged in (("family", "other"), ("runtime_sha256", "0" * 64)):
        doc = json.loads(signed.to_json())
        doc["manifest"][field] = forged
        with pytest.raises(VerificationError) as refused:
            verify_signed(SignedManifest.from_json(json.dumps(doc)), fc_tflite, key.public_key())
        assert refused.value.check == "signature"
    with pytest.raises(ModelError, match="family"):
        build_manifest(fc_tflite, name="fc", version="1.0.0", sequence=1, arena_bytes=0,
                       family="no spaces")  # fmt: skip


def test_cli_sign_covers_the_runtime_settings_and_verify_checks_them(
    tmp_path: Path, fc_model_file: Path
) -> None:
    runner = CliRunner()
    keys = tmp_path / "keys"
    assert runner.invoke(app, ["keygen", "--out", str(keys)]).exit_code == 0
    settings = fc_model_file.with_suffix(".json")
    settings.write_text('{"features": {"threshold_factor": 1.0}}')
    model, pub = str(fc_model_file), str(keys / "model-signing.pub")
    result = runner.invoke(
        app, ["sign", model, "--key", str(keys / "model-signing.key"), "--version", "1.0.0",
              "--family", "fc-line"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "runtime settings" in result.output
    assert read_signed(fc_model_file.with_suffix(".manifest.cbor")).manifest.family == "fc-line"
    result = runner.invoke(app, ["verify", model, "--pubkey", pub])
    assert result.exit_code == 0, result.output
    assert "runtime settings covered" in result.output

    settings.write_text('{"features": {"threshold_factor": 1000000.0}}')  # silence every alert
    result = runner.invoke(app, ["verify", model, "--pubkey", pub])
    assert result.exit_code == 1
    assert "runtime" in result.output
    assert "changed after signing" in result.output
