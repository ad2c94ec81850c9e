"""Loading gateway models safely: signed-manifest verification, hot-swap checks, shadow stats.

A model that replaces the running one (or runs beside it in shadow mode) must come with a
signed manifest next to it (``<stem>.manifest.cbor`` or ``.manifest.json``, written by
``flash-model sign``) that verifies against the configured public key: signature, size and
sha256 of the exact bytes that are then loaded, and the sha256 of its runtime settings
(``<stem>.json``: feature config, thresholds), which the manifest must record
(``runtime_sha256``) (invariant "Models are signed end to end"). Anything else is refused
with a :class:`~gateway.errors.ModelError` naming the file and what is wrong, and the
running model stays.

Further checks for a replacement (:func:`check_replacement`):

* it must be a gateway model with a feature config taking the same input ``channels`` as the
  running one (the per-node baselines are kept and refitted, so the channels must match);
* its family (the manifest's ``family``, else its ``name``) must be the running model's or
  one of ``scoring.model_families``;
* anti-rollback: in the running model's family its ``sequence`` must be above the running
  one's. The persisted per-family floor (:mod:`gateway.pipeline.model_state`) adds the
  highest sequence this gateway ever ran, across restarts.

The start-up model (:func:`load_startup`): the shipped package model is verified against the
package's own public key (``tinymodels/artifacts/package-signing.pub``, written by
``python -m firmware_tools.package_signing``); any other model needs
``scoring.public_key_path`` and is verified like a replacement.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.errors import ModelError
from gateway.events import AnomalyScore
from gateway.protocol.manifest import ModelManifest
from gateway.protocol.signed_manifest import (
    find_signed,
    load_public_key,
    read_signed,
    verify_runtime,
    verify_signed,
)
from tinymodels.runtime import (
    DEFAULT_GATEWAY_MODEL,
    GatewayModel,
    ModelLoadError,
    load_model,
    manifest_path_for,
)

_LOGGER = logging.getLogger(__name__)

# The public key of the key that signed the shipped artifacts (firmware_tools.package_signing).
PACKAGE_PUBLIC_KEY = DEFAULT_GATEWAY_MODEL.with_name("package-signing.pub")
RESIGN_PACKAGE = "python -m firmware_tools.package_signing"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Which gateway model is in use."""

    path: Path
    name: str
    version: str
    sha256: str
    sequence: int | None  # the signed manifest's sequence; None unless signed by the site key
    signed: bool  # verified against the site's key (scoring.public_key_path)
    family: str | None = None  # anti-rollback family (manifest family, else name)


def load_trusted(path: Path) -> tuple[GatewayModel, ModelInfo]:
    """Load a model without a signature check (sha256 against its runtime manifest only)."""
    try:
        model = load_model(path)
    except ModelLoadError as exc:
        raise ModelError(str(exc)) from exc
    _require_gateway_model(model, path)
    m = model.manifest
    info = ModelInfo(
        path,
        str(m.get("name")),
        str(m.get("version")),
        str(m.get("sha256")),
        None,
        False,
        str(m.get("name")),
    )
    return model, info


def load_verified(path: Path, public_key: Ed25519PublicKey) -> tuple[GatewayModel, ModelInfo]:
    """Load ``path`` only if its signed manifest verifies against ``public_key``: the artifact
    and its runtime settings (``<stem>.json``) both."""
    model, verified = _load_signed(path, public_key)
    info = ModelInfo(
        path,
        verified.name,
        str(model.manifest.get("version", verified.version)),
        verified.sha256,
        verified.sequence,
        True,
        verified.family_name,
    )
    return model, info


def load_package(
    path: Path = DEFAULT_GATEWAY_MODEL, public_key_path: Path = PACKAGE_PUBLIC_KEY
) -> tuple[GatewayModel, ModelInfo]:
    """The shipped model, verified against the package's own key (artifact and settings).

    Not the site's trust: anyone can build a package. It proves the shipped settings are the
    ones that were built, so an edited threshold is refused like a tampered model. The model
    is not the site's (``signed`` False, no sequence): site floors do not apply to it.
    """
    try:
        model, verified = _load_signed(path, load_public_key(public_key_path))
    except ModelError as exc:
        raise ModelError(
            f"the shipped gateway model failed its package check: {exc}. If the artifacts were "
            f"rebuilt on purpose, re-sign them with `{RESIGN_PACKAGE}`"
        ) from exc
    info = ModelInfo(
        path,
        verified.name,
        str(model.manifest.get("version", verified.version)),
        verified.sha256,
        None,
        False,
        verified.family_name,
    )
    return model, info


def _load_signed(path: Path, public_key: Ed25519PublicKey) -> tuple[GatewayModel, ModelManifest]:
    signed_path = find_signed(path)
    if signed_path is None:
        raise ModelError(
            f"{path}: no signed manifest next to the model ({path.stem}.manifest.cbor or "
            f".manifest.json); sign it with `flash-model sign` before deploying it"
        )
    runtime_path = manifest_path_for(path)
    try:
        artifact = path.read_bytes()
        runtime = runtime_path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {path} or its runtime settings: {exc}") from exc
    signed = read_signed(signed_path)
    verified = verify_signed(signed, artifact, public_key)  # raises VerificationError
    verify_runtime(verified, runtime, str(runtime_path))  # the settings too, byte for byte
    try:
        runtime_manifest = json.loads(runtime)  # the bytes verified are the bytes used
    except ValueError as exc:
        raise ModelError(f"{runtime_path}: not valid JSON ({exc})") from exc
    if not isinstance(runtime_manifest, dict):
        raise ModelError(f"{runtime_path}: runtime settings must be a JSON object")
    if runtime_manifest.get("sha256") != verified.sha256:
        raise ModelError(
            f"{path}: the runtime manifest {runtime_path.name} names sha256 "
            f"{runtime_manifest.get('sha256')} but the signed manifest {verified.sha256}; "
            "ship the runtime manifest that belongs to this artifact"
        )
    try:
        # The bytes that were verified are the bytes that run (no second read of the file).
        model = GatewayModel(artifact, runtime_manifest)
    except (ModelLoadError, ValueError) as exc:
        raise ModelError(f"{path}: {exc}") from exc
    _require_gateway_model(model, path)
    return model, verified


def load_startup(path: Path, public_key_path: Path | None) -> tuple[GatewayModel, ModelInfo]:
    """The model to start with: the shipped model verified against the package key; any other
    only with a site key (``public_key_path``), verified against it."""
    if path.resolve() == DEFAULT_GATEWAY_MODEL.resolve():
        return load_package(path)
    if public_key_path is None:
        raise ModelError(
            f"{path}: scoring.public_key_path is not set, so the model's signature and its "
            "runtime settings (thresholds) cannot be verified; configure the public key that "
            "signs your models (only the shipped model runs without one)"
        )
    return load_verified(path, load_public_key(public_key_path))


def check_replacement(
    current: GatewayModel,
    info: ModelInfo,
    new: GatewayModel,
    new_info: ModelInfo,
    other_families: Collection[str] = (),
) -> None:
    """Refuse a replacement that cannot take over the running model's per-node state, is of
    another family than the running one (unless listed in ``other_families``), or is not
    newer than the running one in its family."""
    old_cfg, new_cfg = current.feature_config, new.feature_config
    assert old_cfg is not None
    assert new_cfg is not None
    if old_cfg.channels != new_cfg.channels:
        raise ModelError(
            f"{new_info.path}: model takes channels {list(new_cfg.channels)} but the running "
            f"model takes {list(old_cfg.channels)}; a model with other channels needs a restart "
            "(and a new per-node calibration)"
        )
    if new_info.family != info.family and new_info.family not in other_families:
        raise ModelError(
            f"{new_info.path}: model family {new_info.family!r} is not the running model's "
            f"({info.family!r}); a renamed or other model line could bring back an old model, "
            "so it is refused. List the family in scoring.model_families to allow it"
        )
    if (
        info.signed
        and new_info.signed
        and info.family == new_info.family
        and info.sequence is not None
        and new_info.sequence is not None
        and new_info.sequence <= info.sequence
    ):
        raise ModelError(
            f"{new_info.path}: manifest sequence {new_info.sequence} is not above the running "
            f"model's {info.sequence} in family {info.family!r} (rollback refused); sign the "
            "model with a higher sequence"
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
