"""The model artifacts the gateway holds and what their signed manifests say.

Looked for in two places: the directory of the gateway model in use (``[scoring]
model_path``) and ``<data_dir>/models/`` (where artifacts to be flashed to nodes are kept).
Each ``.tflite`` is listed with its sha256 and, when a signed manifest lies beside it
(``<stem>.manifest.cbor`` or ``.json``, written by ``flash-model sign``), the manifest's
fields and the verdict of verifying it with ``[scoring] public_key_path`` if one is set.
Runs on the dashboard's reader thread (file reads and hashing).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.errors import ModelError
from gateway.protocol.manifest import sha256_hex
from gateway.protocol.signed_manifest import (
    SignedManifest,
    find_signed,
    load_public_key,
    read_signed,
    verify_signed,
)

MAX_ARTIFACTS = 200


@dataclass(frozen=True, slots=True)
class Artifact:
    path: str
    name: str
    version: str | None
    size_bytes: int
    sha256: str
    in_use: bool  # the gateway's scoring model
    signed: bool
    sequence: int | None
    target: str | None
    key_id: str | None
    created_at: str | None
    verified: str  # "verified", "not checked (no public key configured)", or why it failed


def _runtime_version(model: Path) -> tuple[str, str | None]:
    try:
        doc = json.loads(model.with_suffix(".json").read_text(encoding="utf-8"))
        return str(doc.get("name", model.stem)), str(doc["version"]) if "version" in doc else None
    except (OSError, ValueError, AttributeError):
        return model.stem, None


def _describe(model: Path, cfg: GatewayConfig, hashes: dict[tuple[str, float], str]) -> Artifact:
    data = model.read_bytes()
    stat = model.stat()
    key = (str(model), stat.st_mtime)
    digest = hashes.get(key) or hashlib.sha256(data).hexdigest()
    hashes[key] = digest
    name, version = _runtime_version(model)
    in_use = model.resolve() == cfg.scoring.model_path.resolve()
    manifest_path = find_signed(model)
    if manifest_path is None:
        return Artifact(str(model), name, version, len(data), digest, in_use, False,
                        None, None, None, None, "unsigned")  # fmt: skip
    try:
        signed = read_signed(manifest_path)
    except ModelError as exc:
        return Artifact(str(model), name, version, len(data), digest, in_use, False,
                        None, None, None, None, f"unreadable manifest: {exc}")  # fmt: skip
    m = signed.manifest
    verdict = "not checked (no [scoring] public_key_path)"
    if cfg.scoring.public_key_path is not None:
        try:
            verify_signed(signed, data, load_public_key(cfg.scoring.public_key_path))
            verdict = "verified"
        except ModelError as exc:
            verdict = f"FAILED: {exc}"
    return Artifact(
        path=str(model), name=m.name, version=m.version, size_bytes=len(data), sha256=digest,
        in_use=in_use, signed=True, sequence=m.sequence, target=m.target,
        key_id=signed.key_id.hex(), created_at=m.created_at, verified=verdict,
    )  # fmt: skip


def artifacts(cfg: GatewayConfig, hashes: dict[tuple[str, float], str]) -> list[Artifact]:
    """Every artifact found, the one in use first; ``hashes`` caches sha256 by (path, mtime)."""
    found: dict[Path, None] = {}
    for folder in (cfg.scoring.model_path.parent, cfg.data_dir / "models"):
        if folder.is_dir():
            for path in sorted(folder.glob("*.tflite"))[:MAX_ARTIFACTS]:
                found[path] = None
    out = []
    for path in found:
        try:
            out.append(_describe(path, cfg, hashes))
        except OSError:
            continue  # removed while we looked
    out.sort(key=lambda a: (not a.in_use, a.name, a.path))
    return out


def load_for_flashing(
    cfg: GatewayConfig, sha256: str, hashes: dict[tuple[str, float], str]
) -> tuple[Artifact, bytes, SignedManifest]:
    """The held artifact with this sha256, its bytes and signed manifest, fit to send to nodes.

    The same checks as ``flash-model flash`` before it sends anything: a signed manifest must
    lie beside it, and the signature must verify with ``[scoring] public_key_path`` when one is
    set (else at least the artifact's size and sha256 must match the manifest; nodes check the
    signature themselves). Raises :class:`ModelError` saying what is wrong.
    """
    found = [a for a in artifacts(cfg, hashes) if a.sha256 == sha256 and a.signed]
    if not found:
        raise LookupError(f"no signed model artifact with sha256 {sha256[:16]}… on this gateway")
    artifact = found[0]
    path = Path(artifact.path)
    data = path.read_bytes()
    manifest_path = find_signed(path)
    if manifest_path is None:
        raise ModelError(f"{path}: its signed manifest is gone; sign it with `flash-model sign`")
    signed = read_signed(manifest_path)
    if cfg.scoring.public_key_path is not None:
        verify_signed(signed, data, load_public_key(cfg.scoring.public_key_path))
    elif len(data) != signed.manifest.size_bytes or sha256_hex(data) != signed.manifest.sha256:
        raise ModelError(
            f"{path} is not the artifact {manifest_path.name} describes (size or sha256 differ); "
            "every node would refuse it: re-sign it"
        )
    return artifact, data, signed
