"""The simulated node's model flash: two slots (A/B) persisted in a directory.

A node runs the model in its *active* slot. A new model goes into the other slot: the transfer
writes it chunk by chunk (resumable from the offset the node reports), :meth:`SlotStore.finish`
verifies it, :meth:`SlotStore.boot_pending` boots it in test mode and runs the self-test, and
only a passing self-test makes it the confirmed active model. Anything else - a failed
self-test, a reboot while in test mode - leaves the old slot active.

On disk (the node's "flash")::

    state.cbor      which slot is active, what each slot holds, the transfer in progress
    slot-a.bin      slot 0's image
    slot-b.bin      slot 1's image

``state.cbor`` is the single source of truth and is only ever replaced atomically (write a
temp file, fsync, ``os.replace``, fsync the directory). The active slot's image file is never
written. Before the inactive slot's file is touched, the state already says that slot is
being written (so it is never trusted again until verified). Hence killing the process at any
instant and calling :meth:`SlotStore.open` again leaves the node with the old model or the
new one, never neither; an unconfirmed test boot found at start-up is reverted, as MCUboot
reverts an image that was not confirmed before the next reset.

Checks, and the :class:`~gateway.protocol.slots.RefusalReason` each failure gives:

* at :meth:`SlotStore.begin` (before any byte is written): the envelope parses (UNSIGNED), its
  Ed25519 signature verifies against the fleet public key (BAD_SIGNATURE), the target class is
  the node's (WRONG_TARGET), the sequence is strictly greater than the running model's
  (OLD_SEQUENCE), the image fits a slot and its arena fits the node's RAM (NO_SPACE);
* at :meth:`SlotStore.finish`: size and sha256 of the received bytes (BAD_HASH), signature again;
* at :meth:`SlotStore.boot_pending`: the self-test (SELF_TEST_FAILED, reported by the caller).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware_tools.sim.slot_state import EMPTY_STATE, Slot, SlotState, fsync_dir
from gateway.errors import FlashError, ModelError
from gateway.protocol.manifest import ModelManifest
from gateway.protocol.messages import SlotInfo
from gateway.protocol.signed_manifest import (
    SignedManifest,
    VerificationError,
    key_id,
    verify_signed,
)
from gateway.protocol.slots import RefusalReason

_LOGGER = logging.getLogger(__name__)

STATE_NAME = "state.cbor"
SLOT_NAMES = ("slot-a.bin", "slot-b.bin")

SelfTest = Callable[[bytes, ModelManifest], None]
"""``self_test(artifact, manifest)``: returns when the model is sane, raises
:class:`SelfTestFailed` otherwise (see :func:`firmware_tools.sim.selftest.run_self_test`)."""

FaultHook = Callable[[str], None]
"""Called before every durable step with its name (``"state-tmp"``, ``"state-replace"``,
``"data"``, ``"truncate"``, ``"data-tmp"``, ``"data-replace"``); tests raise from it to
simulate a power cut at that step."""


class SlotRefused(FlashError):
    """The node refuses a model; ``reason`` says which check failed."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"model refused ({reason.value}): {detail}")
        self.reason = reason
        self.detail = detail


class SlotStateError(FlashError):
    """An operation that makes no sense in the store's current state (no transfer begun,
    nothing to activate, nothing to roll back to). A protocol error, not a refusal."""


class SelfTestFailed(ModelError):
    """The model booted in test mode did not pass its self-test."""


class SlotStore:
    """Two model slots in ``directory``. Not thread-safe; one node drives it.

    Create with :meth:`open`, which also performs the boot-time revert of an unconfirmed test
    boot. Every method that changes state has made that change durable when it returns.
    """

    def __init__(
        self,
        directory: Path,
        *,
        public_key: Ed25519PublicKey,
        target: str,
        slot_bytes: int,
        ram_bytes: int,
        fault: FaultHook | None = None,
    ) -> None:
        self.directory = directory
        self.public_key = public_key
        self.target = target
        self.slot_bytes = slot_bytes
        self.ram_bytes = ram_bytes
        self._fault = fault or (lambda _step: None)
        self._state = EMPTY_STATE
        self._staged_len = 0  # bytes of the staging slot written so far

    # -- life cycle ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        public_key: Ed25519PublicKey,
        target: str,
        slot_bytes: int,
        ram_bytes: int,
        fault: FaultHook | None = None,
    ) -> SlotStore:
        """Open (creating if needed) the slots in ``directory``: what a node does at boot.

        A slot found in test mode (booted, never confirmed: the node reset during its
        self-test) is reverted; the previously active slot stays active.
        """
        directory.mkdir(parents=True, exist_ok=True)
        store = cls(
            directory,
            public_key=public_key,
            target=target,
            slot_bytes=slot_bytes,
            ram_bytes=ram_bytes,
            fault=fault,
        )
        for leftover in directory.glob("*.tmp"):
            leftover.unlink()
        path = directory / STATE_NAME
        if path.exists():
            store._state = SlotState.from_cbor(path.read_bytes())
        state = store._state
        if state.trial is not None:
            trial = state.slots[state.trial]
            _LOGGER.warning(
                "slot %d was in test mode at reset and never confirmed: reverting to slot %s",
                state.trial,
                state.active,
            )
            reverted = SlotState(state.active, None, state.slots)
            if trial is not None:
                reverted = reverted.with_slot(state.trial, Slot(trial.signed_cbor, "failed"))
            store._commit(reverted)
        staging = store._staging_index()
        if staging is not None:
            data_path = store._slot_path(staging)
            size = data_path.stat().st_size if data_path.exists() else 0
            store._staged_len = min(size, store._state.slots[staging].manifest.size_bytes)  # type: ignore[union-attr]
        return store

    # -- reading -------------------------------------------------------------------------------

    def info(self) -> tuple[SlotInfo, ...]:
        """The slots holding a verified model (staging slots are not reported), by index."""
        out = []
        for index, slot in enumerate(self._state.slots):
            if slot is None or slot.state == "staging":
                continue
            m = slot.manifest
            out.append(
                SlotInfo(
                    slot=index,
                    model_id=m.name,
                    model_version=m.version,
                    model_hash=m.model_hash,
                    sequence=m.sequence,
                    active=index == self._state.active,
                    confirmed=slot.state == "confirmed",
                )
            )
        return tuple(out)

    @property
    def active_slot(self) -> int | None:
        return self._state.active

    def active_manifest(self) -> ModelManifest | None:
        slot = self._slot(self._state.active)
        return None if slot is None else slot.manifest

    def active_artifact(self) -> bytes | None:
        """The running model's image, or None when the node has no model."""
        if self._state.active is None:
            return None
        return self._slot_path(self._state.active).read_bytes()

    def slot_artifact(self, index: int) -> bytes | None:
        """The image in slot ``index`` if it holds a verified model (for tests and tools)."""
        slot = self._slot(index)
        if slot is None or slot.state == "staging":
            return None
        return self._slot_path(index).read_bytes()

    @property
    def transfer(self) -> tuple[ModelManifest, int] | None:
        """The model being received and how many of its bytes are stored, if any."""
        index = self._staging_index()
        if index is None:
            return None
        return self._state.slots[index].manifest, self._staged_len  # type: ignore[union-attr]

    def ready_manifest(self) -> ModelManifest | None:
        """The verified model waiting for :meth:`boot_pending`, if any."""
        index = self._ready_index()
        return None if index is None else self._state.slots[index].manifest  # type: ignore[union-attr]

    # -- receiving a model ---------------------------------------------------------------------

    def begin(self, signed_manifest_cbor: bytes) -> int:
        """Start (or resume) receiving the model this signed manifest describes.

        Returns the offset to continue from: the bytes already stored for this same model
        (same sha256) - its size when it is already complete and verified - else 0, after the
        inactive slot has been claimed for it. Raises :class:`SlotRefused` when the manifest
        fails a check that does not need the image.
        """
        signed = self._check_manifest(signed_manifest_cbor)
        manifest = signed.manifest
        index = self._inactive_index()
        current = self._state.slots[index]
        if current is not None and current.signed_cbor == signed.to_cbor():
            if current.state == "ready":
                return manifest.size_bytes
            if current.state == "staging":
                return self._staged_len
        if self._state.trial is not None:
            raise SlotRefused(RefusalReason.BUSY, "a model is being self-tested")
        # Forget the slot's old image before erasing it (a half-erased image is never
        # trusted), and only call it "staging" once it is empty, so the bytes a resume counts
        # are always bytes of this transfer.
        if current is not None:
            self._commit(self._state.with_slot(index, None))
        self._fault("truncate")
        with open(self._slot_path(index), "wb") as f:
            os.fsync(f.fileno())
        self._commit(self._state.with_slot(index, Slot(signed.to_cbor(), "staging")))
        self._staged_len = 0
        _LOGGER.info(
            "slot %d: receiving %s %s (seq %d, %d bytes)",
            index,
            manifest.name,
            manifest.version,
            manifest.sequence,
            manifest.size_bytes,
        )
        return 0

    def write(self, offset: int, data: bytes) -> int:
        """Store ``data`` at ``offset`` of the model being received; return the next offset
        expected. Data at any other offset than the next expected one is ignored (the caller
        resends from the returned offset). The bytes are durable when this returns."""
        index = self._staging_index()
        if index is None:
            raise SlotStateError("no transfer in progress: begin one with the signed manifest")
        size = self._state.slots[index].manifest.size_bytes  # type: ignore[union-attr]
        if offset != self._staged_len or not data:
            return self._staged_len
        if offset + len(data) > size:
            raise SlotRefused(
                RefusalReason.BAD_HASH,
                f"{offset + len(data)} bytes sent but the manifest says {size}",
            )
        self._fault("data")
        fd = os.open(self._slot_path(index), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._staged_len = offset + len(data)
        return self._staged_len

    def finish(self) -> ModelManifest:
        """Verify the received image (size, sha256, signature); return its manifest.

        On success the slot is "ready" for :meth:`boot_pending`. On a hash mismatch the
        received bytes are discarded (the next :meth:`begin` starts from 0) and
        :class:`SlotRefused` is raised. Calling it again for a ready slot is harmless.
        """
        ready = self._ready_index()
        index = self._staging_index()
        if index is None:
            if ready is not None:
                return self._state.slots[ready].manifest  # type: ignore[union-attr]
            raise SlotStateError("no transfer in progress: begin one with the signed manifest")
        slot = self._state.slots[index]
        assert slot is not None
        artifact = self._slot_path(index).read_bytes()
        try:
            manifest = verify_signed(slot.signed, artifact, self.public_key)
        except VerificationError as exc:
            if exc.check in ("size", "sha256"):
                self._commit(self._state.with_slot(index, None))
                self._staged_len = 0
                raise SlotRefused(RefusalReason.BAD_HASH, str(exc)) from exc
            raise SlotRefused(RefusalReason.BAD_SIGNATURE, str(exc)) from exc
        self._commit(self._state.with_slot(index, Slot(slot.signed_cbor, "ready")))
        _LOGGER.info("slot %d: %s %s verified", index, manifest.name, manifest.version)
        return manifest

    # -- activation ----------------------------------------------------------------------------

    def boot_pending(self, self_test: SelfTest) -> bool:
        """Boot the verified model in test mode and run ``self_test`` on it.

        True: it passed and is now the confirmed active model. False: it failed, the old slot
        is active again and the new one is marked failed. A reset during the self-test has the
        same effect as a failure, at the next :meth:`open`.
        """
        index = self._ready_index()
        if index is None:
            raise SlotStateError("no verified model to activate: upload and finish one first")
        slot = self._state.slots[index]
        assert slot is not None
        self._commit(SlotState(self._state.active, index, self._state.slots))
        try:
            self_test(self._slot_path(index).read_bytes(), slot.manifest)
        except SelfTestFailed as exc:
            _LOGGER.warning(
                "slot %d: self-test failed (%s); reverting to slot %s", index, exc, self.active_slot
            )
            failed = SlotState(self._state.active, None, self._state.slots)
            self._commit(failed.with_slot(index, Slot(slot.signed_cbor, "failed")))
            return False
        confirmed = SlotState(index, None, self._state.slots)
        self._commit(confirmed.with_slot(index, Slot(slot.signed_cbor, "confirmed")))
        _LOGGER.info("slot %d: self-test passed, confirmed and active", index)
        return True

    def rollback(self) -> SlotInfo:
        """Make the other confirmed slot active again; return its info."""
        active = self._state.active
        other = 0 if active is None else 1 - active
        slot = self._state.slots[other]
        if slot is None or slot.state != "confirmed":
            raise SlotStateError(
                "the other slot holds no confirmed model; there is nothing to roll back to"
            )
        self._commit(SlotState(other, None, self._state.slots))
        _LOGGER.info("rolled back to slot %d (%s)", other, slot.manifest.version)
        return next(s for s in self.info() if s.slot == other)

    def install_factory(self, artifact: bytes, signed_manifest_cbor: bytes) -> None:
        """Put a confirmed, active model in slot 0 of an empty store: the factory image.

        The signature and hash are checked (the factory signs with the fleet key too);
        sequence and space are not, as nothing runs yet.
        """
        if any(s is not None for s in self._state.slots):
            raise SlotStateError("the factory image goes into an empty store")
        signed = SignedManifest.from_cbor(signed_manifest_cbor)
        verify_signed(signed, artifact, self.public_key)
        self._commit(EMPTY_STATE.with_slot(0, Slot(signed.to_cbor(), "staging")))
        self._atomic_write(self._slot_path(0), artifact)
        self._commit(SlotState(0, None, (Slot(signed.to_cbor(), "confirmed"), None)))

    # -- internals -----------------------------------------------------------------------------

    def _check_manifest(self, data: bytes) -> SignedManifest:
        try:
            signed = SignedManifest.from_cbor(data)
        except ModelError as exc:
            raise SlotRefused(RefusalReason.UNSIGNED, f"no valid signed manifest: {exc}") from exc
        if signed.key_id != key_id(self.public_key):
            raise SlotRefused(
                RefusalReason.BAD_SIGNATURE,
                f"signed by key {signed.key_id.hex()}, not the fleet key "
                f"{key_id(self.public_key).hex()}",
            )
        try:
            self.public_key.verify(signed.signature, signed.payload())
        except InvalidSignature as exc:
            raise SlotRefused(
                RefusalReason.BAD_SIGNATURE, "signature does not match the manifest"
            ) from exc
        m = signed.manifest
        if m.target != self.target:
            raise SlotRefused(
                RefusalReason.WRONG_TARGET,
                f"model is built for {m.target}, this node is {self.target}",
            )
        running = self.active_manifest()
        if running is not None and m.sequence <= running.sequence:
            raise SlotRefused(
                RefusalReason.OLD_SEQUENCE,
                f"sequence {m.sequence} is not above the running model's {running.sequence} "
                f"({running.name} {running.version})",
            )
        if m.size_bytes > self.slot_bytes:
            raise SlotRefused(
                RefusalReason.NO_SPACE,
                f"model is {m.size_bytes} bytes, a slot holds {self.slot_bytes}",
            )
        if m.arena_bytes > self.ram_bytes:
            raise SlotRefused(
                RefusalReason.NO_SPACE,
                f"model needs a {m.arena_bytes}-byte arena, the node has {self.ram_bytes}",
            )
        return signed

    def _slot(self, index: int | None) -> Slot | None:
        return None if index is None else self._state.slots[index]

    def _inactive_index(self) -> int:
        active = self._state.active
        return 0 if active is None else 1 - active

    def _index_in_state(self, wanted: str) -> int | None:
        index = self._inactive_index()
        slot = self._state.slots[index]
        return index if slot is not None and slot.state == wanted else None

    def _staging_index(self) -> int | None:
        return self._index_in_state("staging")

    def _ready_index(self) -> int | None:
        return self._index_in_state("ready")

    def _slot_path(self, index: int) -> Path:
        return self.directory / SLOT_NAMES[index]

    def _commit(self, state: SlotState) -> None:
        self._atomic_write(self.directory / STATE_NAME, state.to_cbor(), step="state")
        self._state = state

    def _atomic_write(self, path: Path, data: bytes, step: str = "data") -> None:
        tmp = path.with_name(path.name + ".tmp")
        self._fault(f"{step}-tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._fault(f"{step}-replace")
        os.replace(tmp, path)
        fsync_dir(path.parent)
