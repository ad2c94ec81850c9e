"""The host's end of our binary transfer, over any wire that moves whole payloads.

:class:`XferSession` implements the :class:`~firmware_tools.flash.api.NodeFlasher` operations
on top of two coroutines a transport provides: ``send(payload)`` and ``recv()`` (the next
transfer payload from the node). It owns no task: every operation reads the node's answers
itself, so nothing runs between calls. The serial and MQTT flashers are thin shells around it.

Requests (BEGIN, END, ACTIVATE, INFO, ROLLBACK) carry an id; a request is repeated with the
same id when no answer comes within the timeout, and the node answers a repeat with its
first answer (it never activates twice). Chunks follow :class:`~gateway.protocol.xfer.
ChunkSender`'s go-back-N window; an upload resumes at the offset the node reports in its
answer to BEGIN.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

from firmware_tools.flash.api import NodeRefused, NodeUnreachable, ProgressCallback
from gateway.errors import FlashError
from gateway.protocol import xfer
from gateway.protocol.signed_manifest import SignedManifest
from gateway.protocol.slots import NodeInfo

_LOGGER = logging.getLogger(__name__)

Send = Callable[[bytes], Awaitable[None]]
Recv = Callable[[], Awaitable[bytes]]


class XferSession:
    """Flash one node through ``send``/``recv``. One operation at a time."""

    def __init__(
        self,
        node_id: str,
        send: Send,
        recv: Recv,
        *,
        timeout_s: float = 5.0,
        retries: int = 3,
        chunk_bytes: int = xfer.DEFAULT_CHUNK_BYTES,
        window: int = xfer.DEFAULT_WINDOW,
    ) -> None:
        self.node_id = node_id
        self._send = send
        self._recv = recv
        self.timeout_s = timeout_s
        self.retries = retries
        self.chunk_bytes = chunk_bytes
        self.window = window
        self._req_ids = itertools.count(int(time.monotonic_ns()) & 0xFFFF)
        self.bad_replies = 0
        self.last_upload_s = 0.0

    # -- NodeFlasher operations ----------------------------------------------------------------

    async def info(self) -> NodeInfo:
        result = await self._request(xfer.Op.INFO)
        return self._info_of(result)

    async def upload(
        self, artifact: bytes, signed: SignedManifest, progress: ProgressCallback
    ) -> int:
        started = time.monotonic()
        begin = xfer.Begin(
            self._next_req(), len(artifact), self.chunk_bytes, self.window, signed.to_cbor()
        )
        answer = await self._exchange(begin)
        if isinstance(answer, xfer.Result):
            raise self._failure(answer)
        assert isinstance(answer, xfer.Offset)
        sender = xfer.ChunkSender(
            artifact, start=answer.offset, chunk_bytes=answer.chunk_bytes, window=answer.window
        )
        _LOGGER.info(
            "%s: upload %d bytes from offset %d (chunk %d, window %d)",
            self.node_id,
            len(artifact),
            answer.offset,
            answer.chunk_bytes,
            answer.window,
        )
        progress(sender.acked, len(artifact))
        await self._pump(sender, progress)
        result = await self._request(xfer.Op.END)
        if result.outcome is not xfer.ResultOutcome.OK:
            raise self._failure(result)
        self.last_upload_s = time.monotonic() - started
        return sender.bytes_sent

    async def activate(self, timeout_s: float) -> NodeInfo:
        result = await self._request(xfer.Op.ACTIVATE, timeout_s=max(timeout_s, self.timeout_s))
        if result.outcome is xfer.ResultOutcome.CONFIRMED:
            return self._info_of(result)
        raise self._failure(result)

    async def rollback(self) -> NodeInfo:
        result = await self._request(xfer.Op.ROLLBACK)
        if result.outcome is not xfer.ResultOutcome.OK:
            raise self._failure(result)
        return self._info_of(result)

    # -- internals -----------------------------------------------------------------------------

    async def _pump(self, sender: xfer.ChunkSender, progress: ProgressCallback) -> None:
        total = len(sender.data)
        stalls = 0
        while not sender.done:
            for chunk in sender.next_chunks():
                await self._send(xfer.encode(chunk))
            try:
                msg = await self._recv_message(self.timeout_s)
            except TimeoutError:
                stalls += 1
                if stalls > self.retries:
                    raise NodeUnreachable(
                        self.node_id,
                        f"no acknowledgement for {self.timeout_s * stalls:.0f} s at offset "
                        f"{sender.acked} of {total}; the next attempt resumes there",
                    ) from None
                _LOGGER.info("%s: no ACK at offset %d; resending", self.node_id, sender.acked)
                sender.on_timeout()
                continue
            if isinstance(msg, xfer.ChunkAck):
                if sender.on_ack(msg.offset):
                    stalls = 0
                    progress(sender.acked, total)
            elif isinstance(msg, xfer.ChunkNack):
                if msg.why is xfer.NackWhy.IDLE:
                    raise FlashError(
                        "the node has no transfer in progress (it rebooted?); retry the upload",
                        node_id=self.node_id,
                    )
                sender.on_nack(msg.offset)
            # Anything else is a late answer to an earlier request: ignore it.

    async def _request(self, op: xfer.Op, *, timeout_s: float | None = None) -> xfer.Result:
        answer = await self._exchange(xfer.Request(op, self._next_req()), timeout_s=timeout_s)
        assert isinstance(answer, xfer.Result)
        return answer

    async def _exchange(
        self, msg: xfer.Begin | xfer.Request, *, timeout_s: float | None = None
    ) -> xfer.Offset | xfer.Result:
        """Send ``msg`` and return the answer with its id, repeating it on silence."""
        payload = xfer.encode(msg)
        wait_s = timeout_s or self.timeout_s
        for _attempt in range(self.retries + 1):
            await self._send(payload)
            deadline = time.monotonic() + wait_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    answer = await self._recv_message(left)
                except TimeoutError:
                    break
                if isinstance(answer, xfer.Offset | xfer.Result) and answer.req == msg.req:
                    return answer
        what = "BEGIN" if isinstance(msg, xfer.Begin) else msg.op.name
        raise NodeUnreachable(
            self.node_id,
            f"no answer to {what} after {self.retries + 1} tries of {wait_s:g} s; check the "
            "port or broker and that the node runs fieldgate firmware",
        )

    async def _recv_message(self, timeout_s: float) -> xfer.XferMessage:
        async with asyncio.timeout(timeout_s):
            while True:
                payload = await self._recv()
                try:
                    return xfer.decode(payload)
                except xfer.XferCodecError:
                    self.bad_replies += 1

    def _next_req(self) -> int:
        return next(self._req_ids) & 0xFFFF

    def _info_of(self, result: xfer.Result) -> NodeInfo:
        if result.info is None:
            raise FlashError("the node's answer carries no slot information", node_id=self.node_id)
        return result.info

    def _failure(self, result: xfer.Result) -> FlashError:
        if result.reason is not None:
            return NodeRefused(self.node_id, result.reason, result.detail)
        return FlashError(
            f"node says: {result.detail or result.outcome.name}", node_id=self.node_id
        )


class XferFlasher:
    """The NodeFlasher operations of a transport that moves whole payloads: a subclass
    provides ``_send``/``_recv`` and ``aclose`` and builds ``self.session`` on them."""

    session: XferSession
    _node_id: str

    @property
    def node_id(self) -> str:
        return self._node_id

    async def info(self) -> NodeInfo:
        return await self.session.info()

    async def upload(
        self, artifact: bytes, signed: SignedManifest, progress: ProgressCallback
    ) -> int:
        return await self.session.upload(artifact, signed, progress)

    async def activate(self, timeout_s: float) -> NodeInfo:
        return await self.session.activate(timeout_s)

    async def rollback(self) -> NodeInfo:
        return await self.session.rollback()
