"""Loading gateway models safely: signed-manifest verification, hot-swap checks, shadow stats.

A model that replaces the running one (or runs beside it in shadow mode) must come with a
signed manifest next to it (``<stem>.manifest.cbor`` or ``.manifest.json``, written by
``flash-model sign``) that verifies against the configured public key: signature, size and
sha256 of the exact bytes that are then loaded (invariant "Models are signed end to
end"). Anything else is refused with a :class:`~gateway.errors.ModelError` saying why, and the running model stays.

Further checks for a replacement:

* it must be a gateway model with a feature config taking the same input ``channels`` as the
  running one (the per-node baselines are kept and refitted, so the channels must match);
* anti-rollback: when both are signed with the same manifest ``name``, the new ``sequence``
  must be greater than the running one's.

The runtime manifest (``<stem>.json``: feature config, thresholds) must name the same sha256 as
the signed manifest. Its other fields are not covered by the signature (see docs/scoring.md).

The start-up model (``scoring.model_path``) is verified the same way when a public key is
configured. Without a key, and for the shipped package model (which carries no signed
manifest), it is trusted if its sha256 matches its runtime manifest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.errors import ModelError
from gateway.events import AnomalyScore
from gateway.protocol.signed_manifest import (
    find_signed,
    load_public_key,
    read_signed,
    verify_signed,
)
from tinymodels.runtime import (
    DEFAULT_GATEWAY_MODEL,
    GatewayModel,
    ModelLoadError,
    load_manifest,
    load_model,
)

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Which gateway model is in use."""

    path: Path
    name: str
    version: str
    sha256: str
    sequence: int | None  # the signed manifest's sequence; None for an unsigned model
    signed: bool


def load_trusted(path: Path) -> tuple[GatewayModel, ModelInfo]:
    """Load a model without a signature check (sha256 against its runtime manifest only)."""
    try:
        model = load_model(path)
    except ModelLoadError as exc:
        raise ModelError(str(exc)) from exc
    _require_gateway_model(model, path)
    m = model.manifest
    info = ModelInfo(
        path, str(m.get("name")), str(m.get("version")), str(m.get("sha256")), None, False
    )
    return model, info


def load_verified(path: Path, public_key: Ed25519PublicKey) -> tuple[GatewayModel, ModelInfo]:
    """Load ``path`` only if its signed manifest verifies against ``public_key``."""
    signed_path = find_signed(path)
    if signed_path is None:
        raise ModelError(
            f"{path}: no signed manifest next to the model ({path.stem}.manifest.cbor or "
            f".manifest.json); sign it with `flash-model sign` before deploying it"
        )
    try:
        artifact = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc}") from exc
    signed = read_signed(signed_path)
    verified = verify_signed(signed, artifact, public_key)  # raises VerificationError
    try:
        runtime_manifest = load_manifest(path)
    except ModelLoadError as exc:
        raise ModelError(str(exc)) from exc
    if runtime_manifest.get("sha256") != verified.sha256:
        raise ModelError(
            f"{path}: the runtime manifest {path.with_suffix('.json').name} names sha256 "
            f"{runtime_manifest.get('sha256')} but the signed manifest {verified.sha256}; "
            "ship the runtime manifest that belongs to this artifact"
        )
    try:
        # The bytes that were verified are the bytes that run (no second read of the file).
        model = GatewayModel(artifact, runtime_manifest)
    except (ModelLoadError, ValueError) as exc:
        raise ModelError(f"{path}: {exc}") from exc
    _require_gateway_model(model, path)
    info = ModelInfo(
        path,
        verified.name,
        str(runtime_manifest.get("version", verified.version)),
        verified.sha256,
        verified.sequence,
        True,
    )
    return model, info


def load_startup(path: Path, public_key_path: Path | None) -> tuple[GatewayModel, ModelInfo]:
    """The model to start with: verified when a public key is configured, except the shipped
    (unsigned) package model, which is trusted on its sha256 unless it has a signed manifest."""
    shipped = path.resolve() == DEFAULT_GATEWAY_MODEL.resolve() and find_signed(path) is None
    if public_key_path is None or shipped:
        return load_trusted(path)
    return load_verified(path, load_public_key(public_key_path))


def check_replacement(
    current: GatewayModel, info: ModelInfo, new: GatewayModel, new_info: ModelInfo
) -> None:
    """Refuse a replacement that cannot take over the running model's per-node state."""
    old_cfg, new_cfg = current.feature_config, new.feature_config
    assert old_cfg is not None
    assert new_cfg is not None
    if old_cfg.channels != new_cfg.channels:
        raise ModelError(
            f"{new_info.path}: model takes channels {list(new_cfg.channels)} but the running "
            f"model takes {list(old_cfg.channels)}; a model with other channels needs a restart "
            "(and a new per-node calibration)"
        )
    if (
        info.signed
        and new_info.signed
        and info.name == new_info.name
        and info.sequence is not None
        and new_info.sequence is not None
        and new_info.sequence <= info.sequence
    ):
        raise ModelError(
            f"{new_info.path}: manifest sequence {new_info.sequence} is not above the running "
            f"model's {info.sequence} (rollback refused); sign the model with a higher sequence"
        )


def _require_gateway_model(model: GatewayModel, path: Path) -> None:
    if model.feature_config is None:
        raise ModelError(f"{path}: not a gateway model (its manifest has no window feature config)")


@dataclass(frozen=True, slots=True)
class ShadowSummary:
    """How the shadow model's scores differ from the running model's over the same rows."""

    primary_version: str
    shadow_version: str
    rows: int
    mean_abs_diff: float
    max_abs_diff: float
    decision_agreement: float  # share of rows where both say the same about score >= 1.0
    primary_anomalous_rows: int
    shadow_anomalous_rows: int


class ShadowStats:
    """Running comparison of paired scores (same node, same row)."""

    def __init__(self, primary_version: str, shadow_version: str) -> None:
        self._versions = (primary_version, shadow_version)
        self._rows = 0
        self._sum_abs = 0.0
        self._max_abs = 0.0
        self._agree = 0
        self._primary_hi = 0
        self._shadow_hi = 0

    def add(self, primary: list[AnomalyScore], shadow: list[AnomalyScore]) -> None:
        # Both lists come from the same rows in the same order when the shadow's streams
        # were rebuilt from the running model's; otherwise pair by (node, time).
        if len(primary) == len(shadow):
            pairs = [(p, s.score) for p, s in zip(primary, shadow, strict=True)]
        else:
            by_key = {(s.node_id, s.t_ms): s.score for s in shadow}
            pairs = [
                (p, by_key[(p.node_id, p.t_ms)]) for p in primary if (p.node_id, p.t_ms) in by_key
            ]
        for p, s in pairs:
            diff = abs(p.score - s)
            self._rows += 1
            self._sum_abs += diff
            self._max_abs = max(self._max_abs, diff)
            p_hi, s_hi = p.score >= 1.0, s >= 1.0
            self._agree += p_hi == s_hi
            self._primary_hi += p_hi
            self._shadow_hi += s_hi

    def summary(self) -> ShadowSummary:
        n = self._rows
        return ShadowSummary(
            primary_version=self._versions[0],
            shadow_version=self._versions[1],
            rows=n,
            mean_abs_diff=self._sum_abs / n if n else 0.0,
            max_abs_diff=self._max_abs,
            decision_agreement=self._agree / n if n else 1.0,
            primary_anomalous_rows=self._primary_hi,
            shadow_anomalous_rows=self._shadow_hi,
        )
