"""Generated data, signed model copies and commit results for the pipeline tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.describe import build_manifest
from firmware_tools.signing import sign_manifest, write_signed
from gateway.ingest import Envelope
from gateway.pipeline.pipeline import ScoringPipeline
from gateway.protocol.messages import (
    Channel,
    NodeInference,
    ReadingBatch,
    Sample,
    TimeBase,
    Transport,
)
from tests.fixtures.tasks import in_background
from tinymodels.runtime import DEFAULT_GATEWAY_MODEL

SKAB_NAMED = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)
SKAB_CHANNELS = tuple(Channel(n, "") for n in SKAB_NAMED)


def pump_frame(seed: int, rows: int, *, fault_from: int | None = None) -> np.ndarray:
    """Rows shaped like SKAB's eight channels; from ``fault_from`` on, pressure jumps and
    flow falls (a closing valve)."""
    rng = np.random.default_rng(seed)
    centre = np.array([0.21, 0.27, 2.1, 0.3, 89.0, 28.0, 233.0, 125.0])
    spread = np.array([0.005, 0.004, 0.4, 0.2, 0.5, 0.5, 10.0, 1.5])
    x = centre + spread * rng.standard_normal((rows, 8))
    if fault_from is not None:
        x[fault_from:, 3] += 1.5
        x[fault_from:, 7] -= 12.0
    return x


def batches(
    node_id: str,
    frame: np.ndarray,
    *,
    per_batch: int = 25,
    channels: tuple[Channel, ...] = SKAB_CHANNELS,
    t0_ms: int = 1_700_000_000_000,
    period_ms: int = 1000,
    boot_id: int = 1,
    first_seq: int = 1,
) -> list[ReadingBatch]:
    out = []
    for start in range(0, frame.shape[0], per_batch):
        rows = frame[start : start + per_batch]
        samples = tuple(
            Sample(t0_ms + (start + i) * period_ms, tuple(float(v) for v in row))
            for i, row in enumerate(rows)
        )
        out.append(
            ReadingBatch(node_id, boot_id, first_seq + start, TimeBase.UNIX_MS, channels, samples)
        )
    return out


def envelope(msg: ReadingBatch | NodeInference, rx_ms: int | None = None) -> Envelope:
    if rx_ms is None:
        rx_ms = msg.samples[-1].t if isinstance(msg, ReadingBatch) else msg.t
    return Envelope(msg, Transport.SERIAL, rx_ms)


def write_key_pair(directory: Path) -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    pub = directory / "model-signing.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, pub


def signed_copy(
    directory: Path,
    key: Ed25519PrivateKey,
    *,
    version: str,
    sequence: int,
    threshold_factor: float | None = None,
    name: str = "gateway_model",
    family: str | None = None,
    sign_runtime: bool = True,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """A copy of the shipped gateway model with its own runtime manifest, signed by ``key``
    (the runtime settings covered by the signature unless ``sign_runtime`` is false, as
    manifests signed before runtime_sha256 existed)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway_model.tflite"
    shutil.copyfile(DEFAULT_GATEWAY_MODEL, path)
    runtime = json.loads(DEFAULT_GATEWAY_MODEL.with_suffix(".json").read_text())
    runtime["version"] = version
    if threshold_factor is not None:
        runtime["features"]["threshold_factor"] = threshold_factor
    if edit is not None:
        edit(runtime)
    path.with_suffix(".json").write_text(json.dumps(runtime))
    manifest = build_manifest(
        path.read_bytes(),
        name=name,
        version=version,
        sequence=sequence,
        arena_bytes=0,
        family=family,
        runtime=path.with_suffix(".json").read_bytes() if sign_runtime else None,
    )
    write_signed(sign_manifest(manifest, key), path)
    return path


@contextlib.asynccontextmanager
async def running(pipeline: ScoringPipeline) -> AsyncIterator[ScoringPipeline]:
    """Run the pipeline's scoring worker until the block ends (ready before it starts)."""
    async with in_background(pipeline.run(), "test:pipeline"):
        await asyncio.wait_for(pipeline.ready.wait(), 10)
        yield pipeline
