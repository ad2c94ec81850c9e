"""A sans-IO SMP (MCUmgr) server for the simulated node's model slots.

The node answers the SMP requests a Zephyr/MCUboot device answers, parsed and checked with
the ``smp`` package's request models, and maps them onto its A/B model store
(:class:`~firmware_tools.sim.slots.SlotStore`). No sockets, no asyncio, no clock:
:meth:`SmpServer.handle` takes one complete SMP message (8-byte header + CBOR) and returns a
:class:`Reply`; the link (serial pty or GATT) moves the bytes and, when a reply asks for a
reset, calls :meth:`SmpServer.reboot` (blocking: it runs the model self-test) after sending.

The profile (also in docs/flash-model.md, "SMP (MCUmgr)"):

* image 0 is the node firmware (listed, never written); **image 1 is the model**, its slots 0
  and 1 are the store's A and B, either of which may be active (MCUboot's direct-XIP with
  revert, not swap). An image's ``hash`` is the sha256 of the model file.
* the signed manifest travels first, as a file: ``fs upload`` to :data:`MANIFEST_PATH`
  (kept in RAM, at most :data:`MAX_MANIFEST_BYTES`). ``image upload`` to image 1 at ``off`` 0
  must then carry ``len`` and ``sha`` equal to the manifest's ``size_bytes`` and ``sha256``.
* upload resumes: a request at ``off`` 0 for the model the store is already receiving
  answers with the offset stored so far and ignores its data, as Zephyr does for a
  matching ``sha``; a chunk at any other offset than the next expected one is ignored and
  answered with the expected offset. The last chunk is answered only after the store has
  verified size, sha256 and signature (``match: true``).
* ``image state`` write ``{hash, confirm: false}`` marks the verified slot for test; ``os
  reset`` then boots it in test mode and runs the self-test, which confirms it or reverts.
  ``{hash: <other slot>, confirm: true}`` makes a previously confirmed model permanent at the
  next reset (rollback); confirming a never-tested model is denied: only its self-test
  confirms a model.
* ``fs download`` of :data:`INFO_PATH` returns the node's slot report (CBOR, see
  :func:`encode_info`).

Refusals are group errors ``{"err": {"group": 1, "rc": <IMG_MGMT_ERR>}}`` for SMP v2
requests, one code per :class:`~gateway.protocol.slots.RefusalReason`
(:data:`REFUSAL_CODES`); SMP v1 requests get ``{"rc": <MGMT_ERR>, "rsn": "<text>"}``
(:data:`REFUSAL_CODES_V1`). Requests the node cannot parse or does not support are answered
``{"rc": MGMT_ERR, "rsn": ...}`` whatever the version, as Zephyr's verbose error responses do.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

import cbor2
from pydantic import ValidationError
from smp import file_management as smpfs
from smp import header as smphdr
from smp import image_management as smpimg
from smp import os_management as smpos
from smp.error import MGMT_ERR

from firmware_tools.sim.slots import SelfTest, SlotRefused, SlotStateError, SlotStore
from firmware_tools.sim.smp_replies import (
    FS,
    Failure,
    Reply,
    describe,
    err_body,
    fs_err,
    img_err,
    rc_body,
    response,
)
from gateway.errors import ModelError
from gateway.protocol.signed_manifest import SignedManifest
from gateway.protocol.slots import RefusalReason
from gateway.protocol.smp_profile import (
    DEFAULT_BUF_COUNT,
    DEFAULT_BUF_SIZE,
    FIRMWARE_IMAGE,
    INFO_PATH,
    MANIFEST_PATH,
    MAX_MANIFEST_BYTES,
    MODEL_IMAGE,
    REFUSAL_CODES,
    REFUSAL_CODES_V1,
)

_LOGGER = logging.getLogger(__name__)

_IMG = smpimg.IMG_MGMT_ERR

_READ, _WRITE = smphdr.OP.READ, smphdr.OP.WRITE
_G_OS, _G_IMG, _G_FS = (
    smphdr.GroupId.OS_MANAGEMENT,
    smphdr.GroupId.IMAGE_MANAGEMENT,
    smphdr.GroupId.FILE_MANAGEMENT,
)
_OS_CMD = smphdr.CommandId.OSManagement
_IMG_CMD = smphdr.CommandId.ImageManagement
_FS_CMD = smphdr.CommandId.FileManagement
_RSP_OVERHEAD = 32  # header + CBOR keys of a download response, kept out of its data


def encode_info(node_id: str, store: SlotStore, firmware_version: str = "") -> bytes:
    """The node report served at :data:`INFO_PATH`: a canonical CBOR map ``{node_id, target,
    slot_bytes, ram_bytes, firmware_version, slots: [{slot, model_id, model_version,
    model_hash (8 bytes), sequence, active, confirmed}]}``."""
    return cbor2.dumps(
        {
            "node_id": node_id,
            "target": store.target,
            "slot_bytes": store.slot_bytes,
            "ram_bytes": store.ram_bytes,
            "firmware_version": firmware_version,
            "slots": [
                {
                    "slot": s.slot,
                    "model_id": s.model_id,
                    "model_version": s.model_version,
                    "model_hash": s.model_hash,
                    "sequence": s.sequence,
                    "active": s.active,
                    "confirmed": s.confirmed,
                }
                for s in store.info()
            ],
        },
        canonical=True,
    )


class SmpServer:
    """The node's SMP management endpoint over its slot store.

    Thread-safe (one lock): the serial and BLE links of one node may call it from worker
    threads, because the store fsyncs and the self-test runs TFLM.
    """

    def __init__(
        self,
        store: SlotStore,
        self_test: SelfTest,
        *,
        node_id: str,
        buf_size: int = DEFAULT_BUF_SIZE,
        buf_count: int = DEFAULT_BUF_COUNT,
        firmware_version: str = "0.0.0",
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.buf_size = buf_size
        self.buf_count = buf_count
        self.firmware_version = firmware_version
        self._self_test = self_test
        self._lock = threading.Lock()
        self._manifest = bytearray()  # the file at MANIFEST_PATH (RAM)
        self._manifest_len = 0
        self._pending: tuple[int, bool] | None = None  # (slot, permanent) for the next reset
        self._downloads: dict[str, bytes] = {}  # snapshot per path while a download runs
        self._hashes: dict[tuple[int, bytes], bytes] = {}  # (slot, hash8) -> full sha256
        self.resets = 0

    # -- the two entry points ------------------------------------------------------------

    def handle(self, request: bytes) -> Reply:
        """Answer one complete SMP request. Malformed input gets an error response (or an
        empty reply when not even the header parses); nothing here raises for bad input."""
        if len(request) < smphdr.Header.SIZE:
            return Reply(b"")
        try:
            header = smphdr.Header.loads(request[: smphdr.Header.SIZE])
        except ValueError as exc:
            # Unknown command of a known group: answer with the raw header fields.
            return Reply(self._raw_error(request, MGMT_ERR.ENOTSUP, str(exc)))
        with self._lock:
            try:
                body, reset = self._dispatch(header, request)
            except Failure as failure:
                _LOGGER.info("%s: smp %s: %s", self.node_id, describe(header), failure)
                body, reset = failure.body, False
            except (ValidationError, cbor2.CBORDecodeError, ValueError, TypeError) as exc:
                body = rc_body(MGMT_ERR.EINVAL, f"malformed request: {type(exc).__name__}")
                reset = False
        return Reply(response(header, body), reset)

    def reboot(self) -> bool | None:
        """What the node does on reset: boot the slot marked for test (self-test, then
        confirm or revert) or switch to the slot marked permanent. Blocking.

        Returns the self-test verdict when a test boot happened, else None.
        """
        with self._lock:
            self.resets += 1
            pending, self._pending = self._pending, None
            self._downloads.clear()
            if pending is None:
                return None
            slot, permanent = pending
            if permanent:
                try:
                    self.store.rollback()
                except SlotStateError as exc:
                    _LOGGER.warning("%s: pending rollback dropped: %s", self.node_id, exc)
                return None
            try:
                passed = self.store.boot_pending(self._self_test)
            except SlotStateError as exc:
                _LOGGER.warning("%s: pending test boot dropped: %s", self.node_id, exc)
                return None
            _LOGGER.info(
                "%s: model in slot %d %s", self.node_id, slot, "confirmed" if passed else "reverted"
            )
            return passed

    # -- dispatch --------------------------------------------------------------------------

    def _dispatch(self, header: smphdr.Header, request: bytes) -> tuple[dict[str, Any], bool]:
        key = (header.op, header.group_id, header.command_id)
        if key == (_WRITE, _G_IMG, _IMG_CMD.UPLOAD):
            return self._upload(smpimg.ImageUploadWriteRequest.loads(request)), False
        if key == (_READ, _G_IMG, _IMG_CMD.STATE):
            smpimg.ImageStatesReadRequest.loads(request)
            return self._image_states(), False
        if key == (_WRITE, _G_IMG, _IMG_CMD.STATE):
            return self._set_state(smpimg.ImageStatesWriteRequest.loads(request)), False
        if key == (_WRITE, _G_FS, _FS_CMD.FILE_DOWNLOAD_UPLOAD):
            return self._file_upload(smpfs.FileUploadRequest.loads(request)), False
        if key == (_READ, _G_FS, _FS_CMD.FILE_DOWNLOAD_UPLOAD):
            return self._file_download(smpfs.FileDownloadRequest.loads(request)), False
        if key == (_WRITE, _G_OS, _OS_CMD.ECHO):
            return {"r": smpos.EchoWriteRequest.loads(request).d}, False
        if key == (_WRITE, _G_OS, _OS_CMD.RESET):
            smpos.ResetWriteRequest.loads(request)
            return {}, True
        if key == (_READ, _G_OS, _OS_CMD.MCUMGR_PARAMETERS):
            return {"buf_size": self.buf_size, "buf_count": self.buf_count}, False
        if key == (_READ, _G_OS, _OS_CMD.OS_APPLICATION_INFO):
            return {"output": f"fieldgate-sim {self.node_id} {self.firmware_version}"}, False
        raise Failure(
            rc_body(MGMT_ERR.ENOTSUP, f"{describe(header)} is not supported"), "unsupported"
        )

    # -- image group -----------------------------------------------------------------------

    def _upload(self, req: smpimg.ImageUploadWriteRequest) -> dict[str, Any]:
        v1 = req.header.version == smphdr.Version.V1
        if req.off == 0:
            resume, size = self._start_upload(req, v1)
            if resume == size:
                return {"off": size, "match": True}  # already received and verified
            if resume > 0:
                # A resumed session: the node says where it is; this request's data is dropped.
                return {"off": resume}
        transfer = self.store.transfer
        if transfer is None:
            raise Failure(
                img_err(_IMG.INVALID_OFFSET, MGMT_ERR.EINVAL, v1, "no upload in progress"),
                "chunk without an upload in progress",
            )
        manifest, stored = transfer
        try:
            stored = self.store.write(req.off, req.data)
            if stored == manifest.size_bytes:
                self.store.finish()
                return {"off": stored, "match": True}
        except SlotRefused as exc:
            raise self._refusal(exc.reason, exc.detail, v1) from exc
        return {"off": stored}

    def _start_upload(self, req: smpimg.ImageUploadWriteRequest, v1: bool) -> tuple[int, int]:
        """Check the session against the staged manifest and begin it in the store;
        returns (resume offset, model size)."""
        if req.image not in (None, MODEL_IMAGE):
            raise Failure(
                img_err(
                    _IMG.INVALID_SLOT,
                    MGMT_ERR.EINVAL,
                    v1,
                    f"image {req.image} is the node firmware; models go to image {MODEL_IMAGE}",
                ),
                "upload to a read-only image",
            )
        if self._manifest_len == 0 or len(self._manifest) != self._manifest_len:
            raise self._refusal(
                RefusalReason.UNSIGNED, f"upload the signed manifest to {MANIFEST_PATH} first", v1
            )
        envelope = bytes(self._manifest)
        try:
            manifest = SignedManifest.from_cbor(envelope).manifest
        except ModelError as exc:
            raise self._refusal(
                RefusalReason.UNSIGNED, f"no valid signed manifest: {exc}", v1
            ) from exc
        if req.len is not None and req.len != manifest.size_bytes:
            raise self._refusal(
                RefusalReason.BAD_HASH,
                f"upload is {req.len} bytes, the manifest says {manifest.size_bytes}",
                v1,
            )
        if req.sha is not None and bytes(req.sha) != bytes.fromhex(manifest.sha256):
            raise self._refusal(
                RefusalReason.BAD_HASH, "upload sha256 is not the manifest's sha256", v1
            )
        ready = self.store.ready_manifest()
        if self._pending is not None and (ready is None or ready.sha256 != manifest.sha256):
            # The upload goes into the slot the mark points at (or replaces the rollback
            # target): a mark left by an interrupted run must not outlive its model.
            _LOGGER.info("%s: new upload clears the mark for the next reset", self.node_id)
            self._pending = None
        try:
            return self.store.begin(envelope), manifest.size_bytes
        except SlotRefused as exc:
            raise self._refusal(exc.reason, exc.detail, v1) from exc

    def _image_states(self) -> dict[str, Any]:
        images: list[dict[str, Any]] = [
            {
                "image": FIRMWARE_IMAGE,
                "slot": 0,
                "version": self.firmware_version,
                "bootable": True,
                "confirmed": True,
                "active": True,
            }
        ]
        ready = self.store.ready_manifest()
        for s in self.store.info():
            state: dict[str, Any] = {
                "image": MODEL_IMAGE,
                "slot": s.slot,
                "version": s.model_version,
                "hash": self._full_hash(s.slot, s.model_hash),
            }
            flags = {
                # A model that failed its self-test stays listed, but is not bootable.
                "bootable": s.confirmed or (ready is not None and ready.model_hash == s.model_hash),
                "active": s.active,
                "confirmed": s.confirmed,
                "pending": self._pending is not None and self._pending[0] == s.slot,
                "permanent": self._pending == (s.slot, True),
            }
            # Zephyr leaves false flags out.
            state.update({k: True for k, v in flags.items() if v})
            images.append(state)
        return {"images": images}

    def _set_state(self, req: smpimg.ImageStatesWriteRequest) -> dict[str, Any]:
        v1 = req.header.version == smphdr.Version.V1
        slots = {self._full_hash(s.slot, s.model_hash): s for s in self.store.info()}
        active = next((s for s in slots.values() if s.active), None)
        if req.hash is None or bytes(req.hash) not in slots:
            if req.confirm and req.hash is None and active is not None and active.confirmed:
                return self._image_states()  # confirming the running, confirmed model: no-op
            raise Failure(
                img_err(_IMG.NO_IMAGE, MGMT_ERR.ENOENT, v1, "no model with that hash"),
                "state write for an unknown hash",
            )
        target = slots[bytes(req.hash)]
        if target.active:
            if req.confirm and target.confirmed:
                return self._image_states()
            raise Failure(
                img_err(
                    _IMG.IMAGE_SETTING_TEST_TO_ACTIVE_DENIED,
                    MGMT_ERR.EBADSTATE,
                    v1,
                    "that model is already running",
                ),
                "test of the active slot",
            )
        if req.confirm:
            if not target.confirmed:
                raise self._refusal(
                    RefusalReason.SELF_TEST_FAILED,
                    "only its own self-test confirms a model: mark it for test, then reset",
                    v1,
                )
            self._pending = (target.slot, True)
        else:
            ready = self.store.ready_manifest()
            if ready is None or ready.model_hash != target.model_hash:
                raise Failure(
                    img_err(
                        _IMG.IMAGE_CONFIRMATION_DENIED,
                        MGMT_ERR.EBADSTATE,
                        v1,
                        "that slot holds no verified, untested model",
                    ),
                    "test of a slot that is not ready",
                )
            self._pending = (target.slot, False)
        return self._image_states()

    def _full_hash(self, slot: int, hash8: bytes) -> bytes:
        key = (slot, hash8)
        full = self._hashes.get(key)
        if full is None:
            artifact = self.store.slot_artifact(slot) or b""
            full = self._hashes[key] = hashlib.sha256(artifact).digest()
        return full

    def _refusal(self, reason: RefusalReason, detail: str, v1: bool) -> Failure:
        _LOGGER.warning("%s: refused model (%s): %s", self.node_id, reason.value, detail)
        if v1:
            return Failure(rc_body(REFUSAL_CODES_V1[reason], f"{reason.value}: {detail}"), detail)
        return Failure(err_body(_G_IMG, REFUSAL_CODES[reason]), detail)

    # -- file system group -----------------------------------------------------------------

    def _file_upload(self, req: smpfs.FileUploadRequest) -> dict[str, Any]:
        v1 = req.header.version == smphdr.Version.V1
        if req.name != MANIFEST_PATH:
            raise Failure(
                fs_err(
                    FS.READ_ONLY_FILESYSTEM,
                    MGMT_ERR.EACCESSDENIED,
                    v1,
                    f"only {MANIFEST_PATH} is writable",
                ),
                f"upload to {req.name}",
            )
        if req.off == 0:
            size = req.len if req.len is not None else len(req.data)
            if size > MAX_MANIFEST_BYTES:
                raise Failure(
                    rc_body(
                        MGMT_ERR.ENOMEM, f"a manifest holds at most {MAX_MANIFEST_BYTES} bytes"
                    ),
                    "manifest too large",
                )
            self._manifest = bytearray()
            self._manifest_len = size
        if req.off != len(self._manifest):
            raise Failure(
                fs_err(
                    FS.FILE_OFFSET_NOT_VALID, MGMT_ERR.EINVAL, v1, "offset is not the file's end"
                ),
                "manifest chunk out of order",
            )
        if len(self._manifest) + len(req.data) > self._manifest_len:
            raise Failure(
                rc_body(MGMT_ERR.EINVAL, "more data than the announced length"), "manifest overrun"
            )
        self._manifest.extend(req.data)
        return {"off": len(self._manifest)}

    def _file_download(self, req: smpfs.FileDownloadRequest) -> dict[str, Any]:
        v1 = req.header.version == smphdr.Version.V1
        if req.off == 0 or req.name not in self._downloads:
            if req.name == INFO_PATH:
                content = encode_info(self.node_id, self.store, self.firmware_version)
            elif req.name == MANIFEST_PATH and self._manifest_len:
                content = bytes(self._manifest)
            else:
                raise Failure(
                    fs_err(FS.FILE_NOT_FOUND, MGMT_ERR.ENOENT, v1, f"no file {req.name}"),
                    f"download of {req.name}",
                )
            self._downloads[req.name] = content
        content = self._downloads[req.name]
        if req.off > len(content):
            raise Failure(
                fs_err(FS.FILE_OFFSET_LARGER_THAN_FILE, MGMT_ERR.EINVAL, v1, "offset past the end"),
                "download offset past the end",
            )
        chunk = content[req.off : req.off + self.buf_size - _RSP_OVERHEAD]
        body: dict[str, Any] = {"off": req.off, "data": chunk}
        if req.off == 0:
            body["len"] = len(content)
        if req.off + len(chunk) >= len(content):
            self._downloads.pop(req.name, None)
        return body

    def _raw_error(self, request: bytes, rc: MGMT_ERR, rsn: str) -> bytes:
        body = cbor2.dumps(rc_body(rc, rsn), canonical=True)
        first = request[0] | 1  # READ -> READ_RSP, WRITE -> WRITE_RSP
        return bytes([first, 0]) + len(body).to_bytes(2, "big") + request[4:8] + body
