"""Signing model manifests and managing the signing keys (where models are built).

The format and its verification live in :mod:`gateway.protocol.signed_manifest`.

The signature covers the manifest's canonical CBOR (:meth:`ModelManifest.to_cbor`). The
private key stays where models are built; the gateway and nodes hold only the public key.

On disk, next to ``model.tflite``:

* ``model.manifest.cbor`` - the envelope nodes and transports use: a canonical CBOR map
  ``{"alg": "Ed25519", "key_id": bstr(8), "manifest": bstr(canonical CBOR), "signature":
  bstr(64)}``. ``manifest`` holds the exact signed bytes.
* ``model.manifest.json`` - the same for people: the manifest as a JSON object, signature and
  key id in hex. Verifying it re-encodes the manifest canonically, so any edit breaks it.

``key_id`` is the first 8 bytes of sha256 over the raw 32-byte public key; it tells which key
signed without trying them all.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import ModelError
from gateway.protocol.manifest import ModelManifest
from gateway.protocol.signed_manifest import SignedManifest, key_id, manifest_paths

PRIVATE_KEY_NAME = "model-signing.key"
PUBLIC_KEY_NAME = "model-signing.pub"


def sign_manifest(manifest: ModelManifest, private_key: Ed25519PrivateKey) -> SignedManifest:
    """Sign the canonical CBOR of ``manifest``."""
    return SignedManifest(
        manifest=manifest,
        signature=private_key.sign(manifest.to_cbor()),
        key_id=key_id(private_key.public_key()),
    )


# --- keys on disk -------------------------------------------------------------------------


def generate_keypair(out_dir: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: private key (PEM PKCS#8, mode 0600) and public key (PEM).

    Refuses to overwrite existing keys unless ``force``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    priv_path = out_dir / PRIVATE_KEY_NAME
    pub_path = out_dir / PUBLIC_KEY_NAME
    if not force and (priv_path.exists() or pub_path.exists()):
        raise ModelError(
            f"{priv_path} or {pub_path} already exists; pass --force to replace the key pair "
            "(models signed with the old key will no longer verify with the new public key)"
        )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    priv_path.unlink(missing_ok=True)
    # Created 0600 from the start so the key is never readable by others, not even briefly.
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return priv_path, pub_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key; refuses one that group or others can read (like ssh)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read private key {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ModelError(
            f"private key {path} is accessible by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ModelError(f"{path} is not an Ed25519 key")
    return key


# --- signed manifests on disk --------------------------------------------------------------


def write_signed(signed: SignedManifest, model_path: Path) -> tuple[Path, Path]:
    json_path, cbor_path = manifest_paths(model_path)
    json_path.write_text(signed.to_json(), encoding="utf-8")
    cbor_path.write_bytes(signed.to_cbor())
    return json_path, cbor_path
