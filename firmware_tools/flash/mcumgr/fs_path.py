"""The stock fs-group path: the model and its signed manifest as files in a node directory.

For a node whose application loads its model from a file (docs/flash-model.md, "Stock
Zephyr nodes", with a reference loader in C). Upload writes ``<dir>/model.tflite`` and then
``<dir>/manifest.cbor``, manifest last, so a node that reads the manifest finds the model it
describes complete. Both are checked with the fs hash/checksum command (sha256) where the node
has it, else read back. An interrupted model upload resumes: the node's file is kept when the
sha256 of its first ``n`` bytes equals ours, and the upload goes on from ``n``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from smp.file_management import (
    FileCloseRequest,
    FileDownloadRequest,
    FileHashChecksumRequest,
    FileStatusRequest,
    FileUploadRequest,
)

from firmware_tools.flash.api import ProgressCallback
from firmware_tools.flash.mcumgr.capabilities import Capabilities
from firmware_tools.flash.mcumgr.errors import SmpError
from firmware_tools.flash.mcumgr.link import McuMgrLink
from firmware_tools.signing import SignedManifest
from gateway.errors import FlashError

_LOGGER = logging.getLogger(__name__)
MODEL_FILE = "model.tflite"
MANIFEST_FILE = "manifest.cbor"
_FILE_NOT_FOUND = 3
_CBOR_BSTR_HEAD = 3  # a byte string's length prefix, for up to 65535 bytes


@dataclass(frozen=True, slots=True)
class FsLayout:
    directory: str  # "/lfs1/model"

    @property
    def model(self) -> str:
        return f"{self.directory.rstrip('/')}/{MODEL_FILE}"

    @property
    def manifest(self) -> str:
        return f"{self.directory.rstrip('/')}/{MANIFEST_FILE}"


class FsPath:
    """Model files on a stock fs-group node."""

    def __init__(self, link: McuMgrLink, caps: Capabilities, layout: FsLayout) -> None:
        self.link = link
        self.caps = caps
        self.layout = layout

    async def file_size(self, path: str) -> int | None:
        reply = await self.link.request(
            FileStatusRequest(name=path), f"fs status of {path}", check=False
        )
        if reply.rc == _FILE_NOT_FOUND and reply.err_group is not None:
            return None
        if reply.rc != 0:
            raise SmpError(self.link.node_id, f"fs status of {path}", reply.rc, reply.err_group)
        return int(reply.body.get("len", 0))

    async def sha256(self, path: str, length: int | None = None) -> bytes | None:
        """The node's sha256 of ``path`` (its first ``length`` bytes); None without the command."""
        if "sha256" not in self.caps.hash_types:
            return None
        request = FileHashChecksumRequest(name=path, type="sha256", off=0, len=length)
        reply = await self.link.request(request, f"fs sha256 of {path}")
        output = reply.body.get("output")
        return bytes(output) if isinstance(output, bytes | bytearray) else None

    async def download(self, path: str) -> bytes:
        data = bytearray()
        total: int | None = None
        while total is None or len(data) < total:
            reply = await self.link.request(
                FileDownloadRequest(name=path, off=len(data)), f"fs download of {path}"
            )
            if total is None:
                total = int(reply.body.get("len", 0))
            chunk = bytes(reply.body.get("data", b""))
            if not chunk and len(data) < total:
                raise FlashError(
                    f"{self.link.node_id}: fs download of {path} stalled at {len(data)}"
                )
            data.extend(chunk)
        return bytes(data)

    async def is_stored(self, path: str, content: bytes) -> bool:
        """Does the node hold exactly ``content`` at ``path``?"""
        size = await self.file_size(path)
        if size != len(content):
            return False
        digest = await self.sha256(path)
        if digest is not None:
            return digest == hashlib.sha256(content).digest()
        return await self.download(path) == content

    async def current(self) -> SignedManifest | None:
        """The signed manifest of the model the node holds, if model and manifest agree."""
        if not await self.file_size(self.layout.manifest):
            return None
        try:
            signed = SignedManifest.from_cbor(await self.download(self.layout.manifest))
        except (ValueError, KeyError, TypeError) as exc:
            _LOGGER.warning(
                "%s: %s is not a signed manifest (%s)", self.link.node_id, self.layout.manifest, exc
            )
            return None
        size = await self.file_size(self.layout.model)
        if size != signed.manifest.size_bytes:
            return None
        digest = await self.sha256(self.layout.model)
        if digest is not None and digest.hex() != signed.manifest.sha256:
            return None
        return signed

    async def upload(
        self, artifact: bytes, signed: SignedManifest, progress: ProgressCallback
    ) -> int:
        """Write model then manifest; return the model bytes sent. Resumes a partial model."""
        # The manifest goes first (emptied: the fs group has no delete), so the application
        # never pairs the old manifest with a half-written model; emptying the old files also
        # frees their blocks before the new ones are written, which a small littlefs needs.
        if await self.file_size(self.layout.manifest):
            await self._write(self.layout.manifest, b"", 0, lambda _d, _t: None)
        start = await self._resume_offset(artifact)
        if start:
            _LOGGER.info("%s: resuming %s at byte %d", self.link.node_id, self.layout.model, start)
        elif await self.file_size(self.layout.model):
            await self._write(self.layout.model, b"", 0, lambda _d, _t: None)
        progress(start, len(artifact))
        sent = await self._write(self.layout.model, artifact, start, progress)
        if not await self.is_stored(self.layout.model, artifact):
            raise FlashError(
                f"{self.link.node_id}: {self.layout.model} on the node does not hash to the "
                "model's sha256 after the upload; run again"
            )
        manifest = signed.to_cbor()
        await self._write(self.layout.manifest, manifest, 0, lambda _d, _t: None)
        if not await self.is_stored(self.layout.manifest, manifest):
            raise FlashError(
                f"{self.link.node_id}: {self.layout.manifest} did not verify; run again"
            )
        return sent

    async def _resume_offset(self, artifact: bytes) -> int:
        size = await self.file_size(self.layout.model)
        if not size or size >= len(artifact):
            return 0
        digest = await self.sha256(self.layout.model, size)
        if digest is not None and digest == hashlib.sha256(artifact[:size]).digest():
            return size
        return 0

    def chunks(self, path: str, data: bytes, start: int) -> Iterator[tuple[FileUploadRequest, str]]:
        """Requests that each fill the node's buffer (less the frame's length and CRC)."""
        off = start
        what = f"fs upload of {path}"
        while off < len(data) or (off == 0 and not data):
            first = {"len": len(data)} if off == 0 else {}
            empty = FileUploadRequest(name=path, off=off, data=b"", **first)
            room = self.caps.max_message - len(empty.BYTES) - _CBOR_BSTR_HEAD
            if room <= 0:
                raise FlashError(
                    f"{self.link.node_id}: the node's {self.caps.buf_size}-byte MCUmgr buffer "
                    f"leaves no room for data in {what}"
                )
            chunk = data[off : off + room]
            yield FileUploadRequest(name=path, off=off, data=chunk, **first), what
            off += len(chunk)
            if not data:
                return

    async def _write(self, path: str, data: bytes, start: int, progress: ProgressCallback) -> int:
        sent = 0
        async for reply in self.link.pipeline(
            self.chunks(path, data, start), self.caps.pipeline_depth
        ):
            off = reply.body.get("off")
            if not isinstance(off, int):
                raise FlashError(
                    f"{self.link.node_id}: fs upload of {path}: reply without an offset"
                )
            sent = off - start
            progress(off, len(data))
        # Close it now (fs close): littlefs frees a truncated file's old blocks only then.
        await self.link.request(FileCloseRequest(), f"fs close of {path}", check=False)
        return sent
