"""Describe a ``.tflite`` artifact as a model manifest (hash, tensors, ops, arena)."""

from __future__ import annotations

from gateway.errors import ModelError
from gateway.protocol.manifest import (
    DEFAULT_TARGET,
    TARGET_CLASSES,
    ModelManifest,
    sha256_hex,
    utc_now_iso,
)


def build_manifest(
    artifact: bytes,
    *,
    name: str,
    version: str,
    sequence: int,
    target: str = DEFAULT_TARGET,
    arena_bytes: int | None = None,
    created_at: str | None = None,
    family: str | None = None,
    runtime: bytes | None = None,
) -> ModelManifest:
    """Describe a ``.tflite`` artifact: hash it, read its tensors and ops from the flatbuffer.

    When ``arena_bytes`` is None it is measured by loading the model in TFLite Micro (needs the
    ``tflite-micro`` wheel). Raises :class:`ModelError` for an unknown target or a file that is
    not a TFLite model. ``runtime``: the exact bytes of the runtime settings beside the
    artifact (``<stem>.json``), whose sha256 the manifest then records; ``family``: the
    anti-rollback family (default: the name).
    """
    from firmware_tools.report import analyse_tflite

    if target not in TARGET_CLASSES:
        raise ModelError(
            f"unknown target class {target!r}; choose one of {', '.join(sorted(TARGET_CLASSES))}"
        )
    analysis = analyse_tflite(artifact)
    if arena_bytes is None:
        from firmware_tools.tflm_check import check_tflm

        arena_bytes = check_tflm(artifact).arena_bytes
    return ModelManifest(
        name=name,
        version=version,
        sequence=sequence,
        sha256=sha256_hex(artifact),
        size_bytes=len(artifact),
        inputs=analysis.inputs,
        outputs=analysis.outputs,
        ops=tuple(sorted({op.name for op in analysis.ops})),
        arena_bytes=arena_bytes,
        target=target,
        created_at=created_at or utc_now_iso(),
        family=family,
        runtime_sha256=sha256_hex(runtime) if runtime is not None else None,
    )
