"""Real Zephyr 4.4 SMP servers (from smpclient's sdist, installed by deploy/setup.sh test).

Each test gets its own server process in its own directory, stopped by PID at the end.
Tests skip, saying why, only when setup did not install the servers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from firmware_tools.describe import build_manifest
from firmware_tools.flash.api import FlashResult
from firmware_tools.signing import generate_keypair, load_private_key, sign_manifest, write_signed
from tests.fixtures.zephyr_smp import FS_SERVER, NativeSimServer, unavailable_reason

REPO = Path(__file__).resolve().parents[5]
NODE_MODEL = (REPO / "tinymodels" / "artifacts" / "node_model.tflite").read_bytes()


def _skip_unless(server: tuple[str, str]) -> None:
    reason = unavailable_reason(*server)
    if reason is not None:
        pytest.skip(reason)


def _fs_server(workdir: Path) -> Iterator[NativeSimServer]:
    _skip_unless(FS_SERVER)
    server = NativeSimServer(*FS_SERVER, workdir=workdir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fs_server(tmp_path: Path) -> Iterator[NativeSimServer]:
    """The native_sim fs server (os, stat, fs, enum; 4 x 1024-byte buffers; 16 KiB littlefs)."""
    yield from _fs_server(tmp_path / "fs-node")


@pytest.fixture
def second_fs_server(tmp_path: Path) -> Iterator[NativeSimServer]:
    yield from _fs_server(tmp_path / "fs-node-2")


@dataclass(frozen=True)
class Model:
    path: Path
    artifact: bytes
    pubkey: Path
    version: str
    private_key: Path


MakeModel = Callable[..., Model]


@pytest.fixture
def make_model(tmp_path: Path) -> MakeModel:
    """Signed model files. The fs server's littlefs holds 16 KiB (four 4 KiB blocks), so the
    artifact is the node model's first ``size`` bytes with the sequence in its last four: the
    node stores files, it does not run them. The manifest is the node model's, with this
    artifact's hash and size."""
    priv, pub = generate_keypair(tmp_path / "keys")
    base = build_manifest(
        NODE_MODEL, name="node_model", version="1.0.0", sequence=1, arena_bytes=3136
    )

    def make(sequence: int, size: int = 3000) -> Model:
        artifact = NODE_MODEL[: size - 4] + sequence.to_bytes(4, "big")
        manifest = dataclasses.replace(
            base,
            version=f"1.{sequence}.0",
            sequence=sequence,
            sha256=hashlib.sha256(artifact).hexdigest(),
            size_bytes=len(artifact),
        )
        path = tmp_path / f"model-{sequence}.tflite"
        path.write_bytes(artifact)
        write_signed(sign_manifest(manifest, load_private_key(priv)), path)
        return Model(path, artifact, pub, manifest.version, priv)

    return make


class _Server(Protocol):
    @property
    def pid(self) -> int | None: ...


@dataclass
class KillMidUpload:
    """A fleet observer that pulls one node's plug (SIGKILL of its server by PID) once more
    than ``after`` bytes of its upload are acknowledged, and only before it ends."""

    node_id: str
    server: _Server
    after: int = 0
    killed: bool = False

    def phase(self, node_id: str, text: str) -> None:
        pass

    def progress(self, node_id: str, done: int, total: int) -> None:
        if node_id == self.node_id and self.after < done < total and not self.killed:
            self.killed = True
            assert self.server.pid is not None
            os.kill(self.server.pid, signal.SIGKILL)

    def finished(self, result: FlashResult) -> None:
        pass
