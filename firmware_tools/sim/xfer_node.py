"""The node's end of our binary model transfer (docs/protocol.md §10), driving a SlotStore.

:class:`XferNode` answers one request payload with zero or more reply payloads; it is what
firmware's transfer task does, with the slot store as its flash driver. It does blocking
file I/O (every acknowledged chunk is fsynced), so links call it through
:meth:`XferNode.handle_async`, which runs it in a worker thread, one request at a time.

When a new model is confirmed, or a rollback changes the active slot, ``on_model_change`` is
called with the new active image and manifest so the simulated node runs it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from firmware_tools.sim.slots import SelfTest, SlotRefused, SlotStateError, SlotStore
from gateway.protocol import xfer
from gateway.protocol.manifest import ModelManifest
from gateway.protocol.slots import NodeInfo, RefusalReason

_LOGGER = logging.getLogger(__name__)

ModelChange = Callable[[bytes, ModelManifest], None]

NODE_MAX_CHUNK_BYTES = 2048
NODE_MAX_WINDOW = 16


class XferNode:
    """One node's transfer endpoint. Not thread-safe: one request at a time."""

    def __init__(
        self,
        node_id: str,
        store: SlotStore,
        self_test: SelfTest,
        *,
        on_model_change: ModelChange | None = None,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.self_test = self_test
        self.on_model_change = on_model_change
        self._lock = asyncio.Lock()
        self.chunks_ok = 0
        self.chunks_bad = 0
        self.bad_payloads = 0
        self._model_change_pending = False
        self._last_request: tuple[xfer.Request, bytes] | None = None

    def info(self) -> NodeInfo:
        s = self.store
        return NodeInfo(self.node_id, s.target, s.slot_bytes, s.ram_bytes, s.info())

    async def handle_async(self, payload: bytes) -> list[bytes]:
        """:meth:`handle` with the flash work in a worker thread, requests strictly in
        arrival order; ``on_model_change`` still runs on the event loop."""
        async with self._lock:
            replies = await asyncio.to_thread(self._handle, payload)
            self._flush_model_change()
            return replies

    def handle(self, payload: bytes) -> list[bytes]:
        """Answer one request payload; malformed payloads are counted and get no answer."""
        replies = self._handle(payload)
        self._flush_model_change()
        return replies

    def _flush_model_change(self) -> None:
        if not self._model_change_pending:
            return
        self._model_change_pending = False
        artifact = self.store.active_artifact()
        manifest = self.store.active_manifest()
        if self.on_model_change is not None and artifact is not None and manifest is not None:
            self.on_model_change(artifact, manifest)

    def _handle(self, payload: bytes) -> list[bytes]:
        try:
            msg = xfer.decode(payload)
        except xfer.XferCodecError as exc:
            self.bad_payloads += 1
            _LOGGER.debug("%s: bad transfer payload: %s", self.node_id, exc)
            return []
        # A request the host repeats because our answer was lost gets the same answer again,
        # not a second activation or rollback.
        last = self._last_request
        if isinstance(msg, xfer.Request) and last is not None and last[0] == msg:
            return [last[1]]
        reply = self._dispatch(msg)
        if reply is None:
            return []
        encoded = xfer.encode(reply)
        if isinstance(msg, xfer.Request) and msg.op is not xfer.Op.INFO:
            self._last_request = (msg, encoded)
        elif isinstance(msg, xfer.Begin):
            self._last_request = None
        return [encoded]

    def _dispatch(self, msg: xfer.XferMessage) -> xfer.XferMessage | None:
        match msg:
            case xfer.Chunk():
                return self._chunk(msg)
            case xfer.Begin():
                return self._begin(msg)
            case xfer.Request(op=xfer.Op.END):
                return self._guarded(msg.req, self._end)
            case xfer.Request(op=xfer.Op.ACTIVATE):
                return self._guarded(msg.req, self._activate)
            case xfer.Request(op=xfer.Op.ROLLBACK):
                return self._guarded(msg.req, self._rollback)
            case xfer.Request(op=xfer.Op.INFO):
                return xfer.Result(msg.req, xfer.ResultOutcome.OK, info=self.info())
        self.bad_payloads += 1  # a reply-type message sent to the node
        return None

    def _begin(self, msg: xfer.Begin) -> xfer.XferMessage:
        if not msg.signed_manifest:
            return _refused(msg.req, RefusalReason.UNSIGNED, "no signed manifest was sent")
        try:
            offset = self.store.begin(msg.signed_manifest)
        except SlotRefused as exc:
            _LOGGER.warning("%s: refused model: %s", self.node_id, exc)
            return _refused(msg.req, exc.reason, exc.detail)
        transfer = self.store.transfer
        manifest = transfer[0] if transfer is not None else self.store.ready_manifest()
        if manifest is not None and manifest.size_bytes != msg.size:
            return _refused(
                msg.req,
                RefusalReason.BAD_HASH,
                f"BEGIN says {msg.size} bytes, the manifest {manifest.size_bytes}",
            )
        return xfer.Offset(
            msg.req,
            offset,
            min(msg.chunk_bytes, NODE_MAX_CHUNK_BYTES),
            min(msg.window, NODE_MAX_WINDOW),
        )

    def _chunk(self, msg: xfer.Chunk) -> xfer.XferMessage:
        transfer = self.store.transfer
        if transfer is None:
            ready = self.store.ready_manifest()
            if ready is not None:  # a late resend after the last ACK
                return xfer.ChunkAck(ready.size_bytes)
            return xfer.ChunkNack(0, xfer.NackWhy.IDLE)
        expected = transfer[1]
        if msg.offset < expected:
            return xfer.ChunkAck(expected)  # a resend of stored bytes
        if msg.offset > expected:
            self.chunks_bad += 1
            return xfer.ChunkNack(expected, xfer.NackWhy.GAP)
        if not msg.crc_ok:
            self.chunks_bad += 1
            return xfer.ChunkNack(expected, xfer.NackWhy.CRC)
        try:
            offset = self.store.write(msg.offset, msg.data)
        except SlotRefused:
            self.chunks_bad += 1
            return xfer.ChunkNack(expected, xfer.NackWhy.GAP)
        self.chunks_ok += 1
        return xfer.ChunkAck(offset)

    def _guarded(self, req: int, action: Callable[[int], xfer.Result]) -> xfer.XferMessage:
        try:
            return action(req)
        except SlotRefused as exc:
            _LOGGER.warning("%s: refused model: %s", self.node_id, exc)
            return _refused(req, exc.reason, exc.detail)
        except SlotStateError as exc:
            return xfer.Result(req, xfer.ResultOutcome.ERROR, detail=str(exc), info=self.info())

    def _end(self, req: int) -> xfer.Result:
        self.store.finish()
        return xfer.Result(req, xfer.ResultOutcome.OK, info=self.info())

    def _activate(self, req: int) -> xfer.Result:
        if not self.store.boot_pending(self.self_test):
            return xfer.Result(
                req,
                xfer.ResultOutcome.REVERTED,
                RefusalReason.SELF_TEST_FAILED,
                "the model failed its self-test; the previous slot is active again",
                info=self.info(),
            )
        self._model_changed()
        return xfer.Result(req, xfer.ResultOutcome.CONFIRMED, info=self.info())

    def _rollback(self, req: int) -> xfer.Result:
        self.store.rollback()
        self._model_changed()
        return xfer.Result(req, xfer.ResultOutcome.OK, info=self.info())

    def _model_changed(self) -> None:
        # Applied by the caller on its own thread: the node's logic is not thread-safe.
        self._model_change_pending = True


def _refused(req: int, reason: RefusalReason, detail: str) -> xfer.Result:
    return xfer.Result(req, xfer.ResultOutcome.REFUSED, reason, detail)
