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
    FileDownloadRequest,
    FileHashChecksumRequest,
    FileStatusRequest,
    FileUploadRequest,
)

from firmware_tools.flash.api import ProgressCallback
from firmware_tools.flash.mcumgr.capabilities import Capabilities
from firmware_tools.flash.mcumgr.errors import LinkLost, SmpError
from firmware_tools.flash.mcumgr.link import McuMgrLink
from gateway.errors import FlashError
from gateway.protocol.signed_manifest import SignedManifest

_LOGGER = logging.getLogger(__name__)
MODEL_FILE = "model.tflite"
MANIFEST_FILE = "manifest.cbor"
_FILE_NOT_FOUND = 3
_CBOR_BSTR_HEAD = 3  # a byte string's length prefix, for up to 65535 bytes
_HASH_COMMAND = 2  # fs group: file hash/checksum
_MAX_RESUMES = 4  # pipeline breaks mended within one attempt


class _Resync(Exception):
    """The node answered with another offset than the one that follows our request."""

    def __init__(self, node_off: int, sent: int) -> None:
        super().__init__(f"the node expects byte {node_off} of the model")
        self.sent = sent


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
        # File sizes learnt on this link session (info() reads both before an upload): an
        # upload right after needs no second look. Forgotten when the link reopens.
        self._sizes: dict[str, int] = {}
        self._sizes_generation = -1
        # Requests and message bytes in flight: what the node's parameters allow, until it
        # drops one; then one at a time for the rest of this path's life.
        self._depth = caps.pipeline_depth
        self._max_bytes = caps.pipeline_bytes

    async def file_size(self, path: str) -> int | None:
        reply = await self.link.request(
            FileStatusRequest(name=path), f"fs status of {path}", check=False
        )
        if reply.rc == _FILE_NOT_FOUND and reply.err_group is not None:
            self._remember(path, 0)
            return None
        if reply.rc != 0:
            raise SmpError(self.link.node_id, f"fs status of {path}", reply.rc, reply.err_group)
        self._remember(path, int(reply.body.get("len", 0)))
        return int(reply.body.get("len", 0))

    async def sizes(self) -> list[int]:
        """Sizes of manifest and model (0 = missing), asked in one pipelined round trip."""
        paths = (self.layout.manifest, self.layout.model)
        requests = [(FileStatusRequest(name=p), f"fs status of {p}") for p in paths]
        sizes: list[int] = []
        async for reply in self.link.pipeline(requests, 2, check=False):
            if reply.rc not in (0, _FILE_NOT_FOUND) or (reply.rc and reply.err_group is None):
                raise SmpError(
                    self.link.node_id, requests[len(sizes)][1], reply.rc, reply.err_group
                )
            sizes.append(int(reply.body.get("len", 0)) if reply.rc == 0 else 0)
        for path, size in zip(paths, sizes, strict=True):
            self._remember(path, size)
        return sizes

    def _remember(self, path: str, size: int) -> None:
        if self._sizes_generation != self.link.generation:
            self._sizes, self._sizes_generation = {}, self.link.generation
        self._sizes[path] = size

    def _known_sizes(self, *paths: str) -> list[int] | None:
        if self._sizes_generation != self.link.generation:
            return None
        known = [self._sizes.get(p) for p in paths]
        return None if None in known else [int(k or 0) for k in known]

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
        manifest_size, size = await self.sizes()
        if not manifest_size:
            return None
        try:
            signed = SignedManifest.from_cbor(await self.download(self.layout.manifest))
        except (ValueError, KeyError, TypeError) as exc:
            _LOGGER.warning(
                "%s: %s is not a signed manifest (%s)", self.link.node_id, self.layout.manifest, exc
            )
            return None
        if size != signed.manifest.size_bytes:
            return None
        digest = await self.sha256(self.layout.model)
        if digest is not None and digest.hex() != signed.manifest.sha256:
            return None
        return signed

    async def upload(
        self, artifact: bytes, signed: SignedManifest, progress: ProgressCallback
    ) -> int:
        """Write model then manifest; return the model bytes sent.

        A request the node dropped (its reply never comes, or a later reply names another
        offset than the one we sent next) breaks the pipeline; the link is reopened and the
        model sent again from its first byte, one request at a time from then on, up to
        :data:`_MAX_RESUMES` times in one attempt. (Not from the node's file size: on native_sim, the size after a burst was
        dropped read right but the file then hashed wrong.) A node that is gone fails the
        reopen; the next attempt resumes from what it holds, checked by hash.
        """
        sent = 0
        for resume in range(_MAX_RESUMES + 1):
            try:
                return sent + await self._upload_once(
                    artifact, signed, progress, resume=resume == 0
                )
            except (LinkLost, _Resync) as exc:
                if resume == _MAX_RESUMES:
                    raise
                sent += exc.sent if isinstance(exc, _Resync) else 0
                self._depth, self._max_bytes = 1, self.caps.max_message
                _LOGGER.info("%s: %s; sending the model again", self.link.node_id, exc)
                if isinstance(exc, LinkLost):
                    await self.link.close()
                    await self.link.open()
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _upload_once(
        self,
        artifact: bytes,
        signed: SignedManifest,
        progress: ProgressCallback,
        *,
        resume: bool = True,
    ) -> int:
        """Write model then manifest; return the model bytes sent. Resumes a partial model.

        Round trips decide the speed on a fast link, so after one pipelined look at both
        files, everything else is one pipeline: the model's chunks, the node's sha256 of it,
        the manifest, the node's sha256 of that. The node handles them in order, so the
        manifest is written only after the model; a model hash that differs empties the
        manifest again before the error is raised.
        """
        model, manifest_path = self.layout.model, self.layout.manifest
        sizes = self._known_sizes(manifest_path, model) or await self.sizes()
        if sizes[0]:
            # Emptied first (the fs group has no delete): the application never pairs the
            # old manifest with a half-written model.
            await self._drain(self.chunks(manifest_path, b"", 0))
        start = await self._resume_offset(artifact, int(sizes[1])) if resume else 0
        if start:
            _LOGGER.info("%s: resuming %s at byte %d", self.link.node_id, model, start)
        progress(start, len(artifact))
        self._sizes_generation = -1  # the files change from here on
        manifest = signed.to_cbor()
        plan: list[tuple[FileUploadRequest | FileHashChecksumRequest, str]] = [
            *self.chunks(model, artifact, start),
            *self._hash_check(model),
            *self.chunks(manifest_path, manifest, 0),
            *self._hash_check(manifest_path),
        ]
        sent = 0
        requests = iter(plan)
        async for reply in self.link.pipeline(plan, self._depth, max_bytes=self._max_bytes):
            request, _what = next(requests)  # replies come in the order sent
            if isinstance(request, FileHashChecksumRequest):
                content = artifact if request.name == model else manifest
                if bytes(reply.body.get("output", b"")) != hashlib.sha256(content).digest():
                    if request.name == model:
                        await self._drain(self.chunks(manifest_path, b"", 0))
                    raise FlashError(
                        f"{self.link.node_id}: {request.name} on the node does not hash to "
                        "its sha256 after the upload; run again"
                    )
            elif request.name == model:
                off = reply.body.get("off")
                if not isinstance(off, int):
                    raise FlashError(f"{self.link.node_id}: fs upload of {model}: no offset")
                if off != request.off + len(request.data):
                    # The node missed a request in flight and names the offset it expects.
                    raise _Resync(off, sent)
                sent = off - start
                progress(off, len(artifact))
        # No hash command: read both back (slow, but the only proof there is).
        if "sha256" not in self.caps.hash_types and not (
            await self.is_stored(model, artifact) and await self.is_stored(manifest_path, manifest)
        ):
            raise FlashError(f"{self.link.node_id}: the files read back differ; run again")
        return sent

    def _hash_check(self, path: str) -> list[tuple[FileHashChecksumRequest, str]]:
        if "sha256" not in self.caps.hash_types:
            return []
        return [(FileHashChecksumRequest(name=path, type="sha256"), f"fs sha256 of {path}")]

    async def _drain(self, requests: Iterator[tuple[FileUploadRequest, str]]) -> None:
        async for _reply in self.link.pipeline(requests, self._depth, max_bytes=self._max_bytes):
            pass

    async def _resume_offset(self, artifact: bytes, size: int) -> int:
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
