"""An in-memory NodeFlasher for the orchestrator's retry/resume bookkeeping tests ONLY.

This is a test double, not a simulation: it has no wire, no signature check and no TFLM. It
keeps the two facts the orchestrator's logic depends on (the node's resume offset and which
slot is active) and fails on a script. Everything user-facing is tested against the real
simulator in tests/integration/firmware_tools/flash.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from firmware_tools.flash.api import NodeRefused, NodeUnreachable, ProgressCallback
from gateway.errors import FlashError
from gateway.protocol.messages import SlotInfo
from gateway.protocol.signed_manifest import SignedManifest
from gateway.protocol.slots import NodeInfo, RefusalReason

CHUNK = 64


@dataclass
class Script:
    unreachable_infos: int = 0  # the first N info() calls raise NodeUnreachable
    cut_upload_at: list[int] = field(default_factory=list)  # one cut per attempt, at offset
    refuse_upload: RefusalReason | None = None
    busy_uploads: int = 0
    fail_self_test: bool = False
    drop_link_after_activate: bool = False  # activate succeeds on the node, reply is lost


class ScriptedFlasher:
    def __init__(
        self,
        node_id: str,
        *,
        target: str = "cortex-m4-256k",
        running: SlotInfo | None = None,
        script: Script | None = None,
        slot_bytes: int = 64 * 1024,
        ram_bytes: int = 32 * 1024,
        transport: str = "serial",
    ) -> None:
        self._node_id = node_id
        self._transport = transport
        self.target = target
        self.slot_bytes = slot_bytes
        self.ram_bytes = ram_bytes
        self.script = script or Script()
        self.slots: list[SlotInfo] = [running] if running else []
        self.received = 0  # bytes of the pending image the node holds
        self.pending: SignedManifest | None = None
        self.calls: list[str] = []
        self.upload_starts: list[int] = []

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def transport(self) -> str:
        return self._transport

    async def info(self) -> NodeInfo:
        self.calls.append("info")
        if self.script.unreachable_infos > 0:
            self.script.unreachable_infos -= 1
            raise NodeUnreachable(self.node_id, "no answer within 1.0 s")
        return NodeInfo(
            self.node_id, self.target, self.slot_bytes, self.ram_bytes, tuple(self.slots)
        )

    async def upload(
        self, artifact: bytes, signed: SignedManifest, progress: ProgressCallback
    ) -> int:
        self.calls.append("upload")
        if self.script.busy_uploads > 0:
            self.script.busy_uploads -= 1
            raise NodeRefused(self.node_id, RefusalReason.BUSY)
        if self.script.refuse_upload is not None:
            raise NodeRefused(self.node_id, self.script.refuse_upload, "scripted")
        if self.pending is None or self.pending.manifest.sha256 != signed.manifest.sha256:
            self.pending, self.received = signed, 0
        self.upload_starts.append(self.received)
        cut = self.script.cut_upload_at.pop(0) if self.script.cut_upload_at else None
        sent = 0
        progress(self.received, len(artifact))
        while self.received < len(artifact):
            if cut is not None and self.received >= cut:
                raise FlashError("link dropped mid-transfer", node_id=self.node_id)
            n = min(CHUNK, len(artifact) - self.received)
            self.received += n
            sent += n
            progress(self.received, len(artifact))
            await asyncio.sleep(0)
        return sent

    async def activate(self, timeout_s: float) -> NodeInfo:
        self.calls.append("activate")
        assert self.pending is not None
        assert self.received == self.pending.manifest.size_bytes
        if self.script.fail_self_test:
            raise NodeRefused(self.node_id, RefusalReason.SELF_TEST_FAILED, "probe output NaN")
        m = self.pending.manifest
        new = SlotInfo(
            slot=1 - (self.slots[0].slot if self.slots else 1),
            model_id=m.name,
            model_version=m.version,
            model_hash=bytes.fromhex(m.sha256)[:8],
            sequence=m.sequence,
            active=True,
            confirmed=True,
        )
        old = [
            SlotInfo(s.slot, s.model_id, s.model_version, s.model_hash, s.sequence, False, True)
            for s in self.slots
        ]
        self.slots = [*old[:1], new]
        self.pending, self.received = None, 0
        if self.script.drop_link_after_activate:
            self.script.drop_link_after_activate = False
            raise FlashError("link dropped waiting for the verdict", node_id=self.node_id)
        return NodeInfo(
            self.node_id, self.target, self.slot_bytes, self.ram_bytes, tuple(self.slots)
        )

    async def rollback(self) -> NodeInfo:
        self.calls.append("rollback")
        previous = [s for s in self.slots if not s.active and s.confirmed]
        if not previous:
            raise FlashError("no previous model to roll back to", node_id=self.node_id)
        self.slots = [
            SlotInfo(
                s.slot, s.model_id, s.model_version, s.model_hash, s.sequence, not s.active, True
            )
            for s in self.slots
        ]
        return NodeInfo(
            self.node_id, self.target, self.slot_bytes, self.ram_bytes, tuple(self.slots)
        )

    async def aclose(self) -> None:
        pass


def running_slot(version: str = "1.0.0", sequence: int = 1) -> SlotInfo:
    return SlotInfo(0, "pump", version, b"\x01" * 8, sequence, active=True, confirmed=True)
