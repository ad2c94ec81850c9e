"""The signed-manifest format and its verification (Ed25519 over the manifest's canonical CBOR).

The signature covers the manifest's canonical CBOR (:meth:`ModelManifest.to_cbor`). The
private key stays where models are built (``flash-model keygen``/``sign``); the gateway and
nodes hold only the public key and use this module to verify.

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

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.errors import ModelError
from gateway.protocol.manifest import ModelManifest, sha256_hex

ALG = "Ed25519"


class VerificationError(ModelError):
    """A signed manifest or its artifact failed verification; ``check`` says which check."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"verification failed ({check}): {message}")
        self.check = check  # "format", "key", "signature", "size", "sha256" or "runtime"


def key_id(public_key: Ed25519PublicKey) -> bytes:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:8]


@dataclass(frozen=True, slots=True)
class SignedManifest:
    manifest: ModelManifest
    signature: bytes
    key_id: bytes
    # The exact bytes that were signed when read from a CBOR envelope; None means
    # "re-encode the manifest canonically" (JSON, or freshly signed).
    signed_bytes: bytes | None = None

    def payload(self) -> bytes:
        return self.signed_bytes if self.signed_bytes is not None else self.manifest.to_cbor()

    def to_cbor(self) -> bytes:
        return cbor2.dumps(
            {
                "alg": ALG,
                "key_id": self.key_id,
                "manifest": self.payload(),
                "signature": self.signature,
            },
            canonical=True,
        )

    @classmethod
    def from_cbor(cls, data: bytes) -> SignedManifest:
        try:
            env = cbor2.loads(data)
        except (cbor2.CBORDecodeError, ValueError) as exc:
            raise VerificationError("format", f"signed manifest is not valid CBOR: {exc}") from exc
        env = _check_envelope(env, bytes)
        signed = env["manifest"]
        if not isinstance(env["signature"], bytes) or not isinstance(env["key_id"], bytes):
            raise VerificationError("format", "signature and key_id must be byte strings")
        return cls(
            manifest=_manifest(ModelManifest.from_cbor, signed),
            signature=env["signature"],
            key_id=env["key_id"],
            signed_bytes=signed,
        )

    def to_json(self) -> str:
        doc = {
            "alg": ALG,
            "key_id": self.key_id.hex(),
            "manifest": self.manifest.to_dict(),
            "signature": self.signature.hex(),
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> SignedManifest:
        try:
            env = json.loads(text)
        except ValueError as exc:  # also bytes that are not UTF-8
            raise VerificationError("format", f"signed manifest is not valid JSON: {exc}") from exc
        env = _check_envelope(env, dict)
        try:
            signature = bytes.fromhex(env["signature"])
            kid = bytes.fromhex(env["key_id"])
        except (TypeError, ValueError) as exc:
            raise VerificationError("format", "signature and key_id must be hex") from exc
        return cls(
            manifest=_manifest(ModelManifest.from_dict, env["manifest"]),
            signature=signature,
            key_id=kid,
        )


def _manifest(parse: Any, data: Any) -> ModelManifest:
    """Parse the manifest inside an envelope; any malformation is a VerificationError."""
    try:
        manifest: ModelManifest = parse(data)
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, cbor2.CBORDecodeError) as exc:
        raise VerificationError("format", f"manifest is malformed: {exc!r}") from exc
    return manifest


def _check_envelope(env: Any, manifest_type: type) -> dict[str, Any]:
    if not isinstance(env, dict) or not {"alg", "key_id", "manifest", "signature"} <= env.keys():
        raise VerificationError(
            "format", "signed manifest needs the keys alg, key_id, manifest, signature"
        )
    if env["alg"] != ALG:
        raise VerificationError("format", f"signature algorithm {env['alg']!r} is not {ALG}")
    if not isinstance(env["manifest"], manifest_type):
        raise VerificationError("format", "manifest field has the wrong type")
    return env


def verify_signed(
    signed: SignedManifest, artifact: bytes, public_key: Ed25519PublicKey
) -> ModelManifest:
    """Check the signature with ``public_key``, then the artifact's size and sha256.

    Returns the verified manifest. Raises :class:`VerificationError` (a ``ModelError``) whose
    ``check`` names what failed.
    """
    expected_kid = key_id(public_key)
    if signed.key_id != expected_kid:
        raise VerificationError(
            "key",
            f"manifest was signed by key {signed.key_id.hex()}, but the public key given is "
            f"{expected_kid.hex()}; use the public key that matches the signing key",
        )
    try:
        public_key.verify(signed.signature, signed.payload())
    except InvalidSignature as exc:
        raise VerificationError(
            "signature",
            "signature does not match the manifest: the manifest was altered after signing "
            "(or signed by another key with a colliding id); re-sign it with `flash-model sign`",
        ) from exc
    m = signed.manifest
    if len(artifact) != m.size_bytes:
        raise VerificationError(
            "size", f"artifact is {len(artifact)} bytes but the manifest says {m.size_bytes}"
        )
    digest = sha256_hex(artifact)
    if digest != m.sha256:
        raise VerificationError(
            "sha256",
            f"artifact sha256 {digest} does not match the manifest's {m.sha256}: the model file "
            "was altered or is not the one that was signed",
        )
    return m


def verify_runtime(manifest: ModelManifest, runtime: bytes, where: str) -> None:
    """Check that the runtime settings ``runtime`` (the exact bytes of ``where``, the
    ``<stem>.json`` beside the artifact) are the ones the verified ``manifest`` signed.

    Raises :class:`VerificationError` with check ``runtime`` when the manifest covers no
    runtime settings or names other ones. Call it after :func:`verify_signed`.
    """
    if manifest.runtime_sha256 is None:
        raise VerificationError(
            "runtime",
            f"{where}: the runtime settings (thresholds, features) are not covered by the "
            f"signature: the signed manifest of {manifest.name} {manifest.version} has no "
            "runtime_sha256; re-sign the model with `flash-model sign`, which records the "
            "settings' hash",
        )
    digest = sha256_hex(runtime)
    if digest != manifest.runtime_sha256:
        raise VerificationError(
            "runtime",
            f"{where}: sha256 {digest} is not the runtime_sha256 {manifest.runtime_sha256} "
            "the manifest signed: the runtime settings (thresholds, features) were changed "
            "after signing; restore the signed file or re-sign the model",
        )


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key: PEM, or the raw 32 bytes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read public key {path}: {exc}") from exc
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ModelError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ModelError(f"{path} is not an Ed25519 public key")
    return key


def manifest_paths(model_path: Path) -> tuple[Path, Path]:
    """Where the JSON and CBOR signed manifests of ``model_path`` live."""
    return model_path.with_suffix(".manifest.json"), model_path.with_suffix(".manifest.cbor")


def read_signed(path: Path) -> SignedManifest:
    """Read a signed manifest file (``.cbor`` envelope or ``.json``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read signed manifest {path}: {exc}") from exc
    if path.suffix == ".cbor":
        return SignedManifest.from_cbor(data)
    return SignedManifest.from_json(data)


def find_signed(model_path: Path) -> Path | None:
    """The signed manifest next to ``model_path`` (CBOR preferred), if any."""
    json_path, cbor_path = manifest_paths(model_path)
    for p in (cbor_path, json_path):
        if p.exists():
            return p
    return None
