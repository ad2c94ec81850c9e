"""The model manifest: what a node needs to know about an artifact before it activates it.

A manifest names one ``.tflite`` artifact by content (sha256 and size) and records what the
node must provide to run it (input/output quantisation, ops, arena bytes, target class). It is
signed where models are built (:mod:`gateway.protocol.signed_manifest`); the signature covers
:meth:`ModelManifest.to_cbor`, the canonical CBOR encoding (RFC 8949 §4.2.1: shortest integer
and float forms, map keys sorted), so any party that decodes and re-encodes it gets the same
bytes. JSON is the human-facing twin of the same fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cbor2

from gateway.errors import ModelError

MANIFEST_FORMAT = 1

# Semantic version 2.0.0 (https://semver.org), including pre-release and build parts.
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True, slots=True)
class TargetClass:
    """A family of nodes a model is built for, with the memory a model may use there."""

    name: str
    ram_bytes: int  # RAM left for the tensor arena after firmware and buffers
    flash_bytes: int  # size of one model slot
    description: str


# Budgets are per model slot and for the arena, not the whole chip: firmware, the radio stack
# and the second (A/B) slot take the rest.
TARGET_CLASSES: dict[str, TargetClass] = {
    t.name: t
    for t in (
        TargetClass("cortex-m0-32k", 16 * 1024, 64 * 1024, "Cortex-M0+, 32 KiB RAM"),
        TargetClass("cortex-m4-64k", 32 * 1024, 128 * 1024, "Cortex-M4F, 64 KiB RAM"),
        TargetClass("cortex-m4-256k", 128 * 1024, 384 * 1024, "Cortex-M4F, 256 KiB RAM (nRF52840)"),
        TargetClass("cortex-m7-512k", 320 * 1024, 1024 * 1024, "Cortex-M7, 512 KiB RAM"),
        TargetClass("esp32-s3", 256 * 1024, 2 * 1024 * 1024, "ESP32-S3, internal SRAM"),
    )
}
DEFAULT_TARGET = "cortex-m4-256k"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Shape, type and int8 quantisation of one model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # "int8", "float32", ...
    scale: float  # 0.0 when the tensor is not quantised
    zero_point: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(
            name=str(d["name"]),
            shape=tuple(int(x) for x in d["shape"]),
            dtype=str(d["dtype"]),
            scale=float(d["scale"]),
            zero_point=int(d["zero_point"]),
        )


@dataclass(frozen=True, slots=True)
class ModelManifest:
    """Everything a node and the gateway check about a model artifact.

    ``sequence`` is monotonic per model family (:attr:`family_name`): a node refuses a manifest
    whose sequence is not greater than the one it runs (anti-rollback), whatever the semantic
    ``version`` says.

    Two optional fields, written only when set (so manifests signed without them keep their
    exact canonical bytes and signatures):

    * ``family``: the anti-rollback family. Models of one family share one sequence space
      whatever their ``name``; without it the family is the ``name``.
    * ``runtime_sha256``: sha256 of the runtime settings file beside the artifact
      (``<stem>.json``: feature config, thresholds), so the signature covers them too.
    """

    name: str
    version: str  # semantic version, "1.4.0"
    sequence: int
    sha256: str  # hex of the artifact's sha256
    size_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ops: tuple[str, ...]  # builtin op names, sorted ("FULLY_CONNECTED", "SOFTMAX")
    arena_bytes: int
    target: str  # a TARGET_CLASSES key, e.g. "cortex-m4-256k"
    created_at: str  # ISO 8601 UTC, seconds resolution
    format: int = MANIFEST_FORMAT
    family: str | None = None  # anti-rollback family; None: the name
    runtime_sha256: str | None = None  # hex sha256 of the runtime settings (<stem>.json)

    def __post_init__(self) -> None:
        problems = []
        if not _NAME.match(self.name):
            problems.append(f"name {self.name!r} must be 1-64 characters of [A-Za-z0-9._-]")
        if not _SEMVER.match(self.version):
            problems.append(f"version {self.version!r} is not a semantic version like 1.4.0")
        if self.sequence < 1:
            problems.append(f"sequence {self.sequence} must be >= 1")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            problems.append("sha256 must be 64 lowercase hex digits")
        if self.family is not None and not _NAME.match(self.family):
            problems.append(f"family {self.family!r} must be 1-64 characters of [A-Za-z0-9._-]")
        if self.runtime_sha256 is not None and not re.fullmatch(
            r"[0-9a-f]{64}", self.runtime_sha256
        ):
            problems.append("runtime_sha256 must be 64 lowercase hex digits")
        if self.size_bytes < 1 or self.arena_bytes < 0:
            problems.append("size_bytes must be positive and arena_bytes non-negative")
        if problems:
            raise ModelError("invalid manifest: " + "; ".join(problems))

    @property
    def family_name(self) -> str:
        """The anti-rollback family: ``family`` when the manifest names one, else ``name``."""
        return self.family if self.family is not None else self.name

    @property
    def model_hash(self) -> bytes:
        """The first 8 bytes of the sha256, as nodes report it (``NodeInference.model_hash``)."""
        return bytes.fromhex(self.sha256)[:8]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": self.format,
            "name": self.name,
            "version": self.version,
            "sequence": self.sequence,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "ops": list(self.ops),
            "arena_bytes": self.arena_bytes,
            "target": self.target,
            "created_at": self.created_at,
        }
        if self.family is not None:
            d["family"] = self.family
        if self.runtime_sha256 is not None:
            d["runtime_sha256"] = self.runtime_sha256
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelManifest:
        try:
            fmt = int(d.get("format", MANIFEST_FORMAT))
            if fmt != MANIFEST_FORMAT:
                raise ModelError(
                    f"manifest format {fmt} is not supported (this tool reads {MANIFEST_FORMAT});"
                    " upgrade fieldgate"
                )
            return cls(
                name=str(d["name"]),
                version=str(d["version"]),
                sequence=int(d["sequence"]),
                sha256=str(d["sha256"]),
                size_bytes=int(d["size_bytes"]),
                inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
                outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
                ops=tuple(str(o) for o in d["ops"]),
                arena_bytes=int(d["arena_bytes"]),
                target=str(d["target"]),
                created_at=str(d["created_at"]),
                format=fmt,
                family=_optional_str(d, "family"),
                runtime_sha256=_optional_str(d, "runtime_sha256"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"manifest is malformed: {exc!r}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelManifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"manifest is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelError("manifest JSON must be an object")
        return cls.from_dict(data)

    def to_cbor(self) -> bytes:
        """Canonical CBOR: the exact bytes a signature covers."""
        return cbor2.dumps(self.to_dict(), canonical=True)

    @classmethod
    def from_cbor(cls, data: bytes) -> ModelManifest:
        try:
            decoded = cbor2.loads(data)
        except (cbor2.CBORDecodeError, ValueError) as exc:
            raise ModelError(f"manifest is not valid CBOR: {exc}") from exc
        if not isinstance(decoded, dict):
            raise ModelError("manifest CBOR must be a map")
        return cls.from_dict(decoded)

    def with_changes(self, **changes: Any) -> ModelManifest:
        return dataclasses.replace(self, **changes)


def _optional_str(d: dict[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key} must be a string, not {type(value).__name__}")
    return value


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
