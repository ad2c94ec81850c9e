"""Flashing models over SMP (MCUmgr) with smpclient, on a serial port or over BLE.

The node side follows the profile of :mod:`firmware_tools.sim.smp_server` (and
docs/flash-model.md, "SMP (MCUmgr)"): the signed manifest is uploaded as the file
:data:`MANIFEST_PATH`, the model as image 1; ``image state`` + ``os reset`` test-boot it and
the node confirms or reverts by itself; :data:`INFO_PATH` is the node's slot report.

``SmpSerialFlasher`` drives :class:`smpclient.transport.serial.SMPSerialTransport` (base64
line framing, what Zephyr calls SMP over console/UART) on the node's mgmt port.
``SmpBleFlasher`` drives :class:`smpclient.transport.ble.SMPBLETransport` with bleak on our
Bumble backend (:mod:`gateway.ble`), so the same code runs against a Bumble virtual radio or
a USB HCI dongle. Both share one :class:`SMPClient` per flasher, opened on first use.

:func:`smp_upload_goodput` is what ``bench.flash`` measures.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Any, Final

import cbor2
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakError
from smp import header as smphdr
from smp import image_management as smpimg
from smp.error import MGMT_ERR
from smpclient import SMPClient
from smpclient.exceptions import SMPClientException
from smpclient.generics import SMPRequest, TEr1, TEr2, TRep, error, error_v1
from smpclient.requests.image_management import ImageStatesRead, ImageStatesWrite, ImageUploadWrite
from smpclient.requests.os_management import ResetWrite
from smpclient.transport import (
    SMP_CHARACTERISTIC_UUID,
    SMP_SERVICE_UUID,
    SMPTransport,
    SMPTransportDisconnected,
)
from smpclient.transport.ble import (
    MAC_ADDRESS_PATTERN,
    SMPBLETransport,
    SMPBLETransportDeviceNotFound,
    SMPBLETransportNotSMPServer,
)
from smpclient.transport.serial import BufferSize, SMPSerialTransport

from firmware_tools.flash.api import NodeRefused, NodeUnreachable, ProgressCallback
from firmware_tools.flash.mcumgr.errors import rc_name
from gateway.errors import FlashError
from gateway.protocol.messages import SlotInfo
from gateway.protocol.signed_manifest import SignedManifest
from gateway.protocol.slots import NodeInfo, RefusalReason
from gateway.protocol.smp_profile import (
    INFO_PATH,
    MANIFEST_PATH,
    MODEL_IMAGE,
    REFUSAL_CODES,
    REFUSAL_CODES_V1,
)

_LOGGER = logging.getLogger(__name__)

_REASON_BY_CODE: Final = {int(code): reason for reason, code in REFUSAL_CODES.items()}
_REASON_BY_CODE_V1: Final = {int(code): reason for reason, code in REFUSAL_CODES_V1.items()}
_ADVICE: Final = {
    RefusalReason.UNSIGNED: "sign the model with `flash-model sign` and flash it with its manifest",
    RefusalReason.BAD_SIGNATURE: "sign it with the fleet key whose public half the node holds",
    RefusalReason.BAD_HASH: "the model file does not match its manifest; rebuild or re-sign it",
    RefusalReason.OLD_SEQUENCE: "sign the model with a higher sequence number than the node runs",
    RefusalReason.WRONG_TARGET: "build the model for the node's target class",
    RefusalReason.NO_SPACE: "the model or its arena is too large for this node",
    RefusalReason.BUSY: "a model is already waiting to be tested; reset the node and retry",
    RefusalReason.SELF_TEST_FAILED: "the node confirms a model only after its own self-test",
}
_MAX_ATTRIBUTE_BYTES = 512
_POLL_S = 0.5  # per request while waiting for a rebooting node


class _SmpFlasher(abc.ABC):
    """SMP over one smpclient transport; subclasses say which."""

    transport_name = "smp"

    def __init__(self, node_id: str, address: str, *, timeout_s: float) -> None:
        self._node_id = node_id
        self.address = address
        self.timeout_s = timeout_s
        self._client: SMPClient | None = None
        self._uploaded: SignedManifest | None = None

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def transport(self) -> str:
        return self.transport_name

    @abc.abstractmethod
    def _make_transport(self) -> SMPTransport:
        """The smpclient transport this flasher talks through (serial or BLE)."""

    # -- NodeFlasher ---------------------------------------------------------------------

    async def info(self) -> NodeInfo:
        client = await self._connected()
        try:
            raw = await client.download_file(INFO_PATH, timeout_s=self.timeout_s)
        except SMPClientException as exc:
            raise FlashError(f"{self.node_id}: cannot read {INFO_PATH}: {exc}") from exc
        except (TimeoutError, SMPTransportDisconnected) as exc:
            await self._drop()
            raise NodeUnreachable(self.node_id, f"no answer to an SMP request ({exc})") from exc
        return _parse_info(self.node_id, raw)

    async def upload(
        self, artifact: bytes, signed: SignedManifest, progress: ProgressCallback
    ) -> int:
        client = await self._connected()
        total = len(artifact)
        sent = 0
        try:
            async for _off in client.upload_file(
                signed.to_cbor(), MANIFEST_PATH, timeout_s=self.timeout_s
            ):
                pass
            # An empty first chunk opens (or resumes) the session: the node answers with
            # the offset it already holds, so no data is sent twice.
            off = await self._upload_chunk(
                client,
                ImageUploadWrite(
                    off=0,
                    data=b"",
                    image=MODEL_IMAGE,
                    len=total,
                    sha=hashlib.sha256(artifact).digest(),
                    upgrade=False,
                ),
            )
            progress(off, total)
            while off < total:
                first: dict[str, Any] = {"len": total, "image": MODEL_IMAGE} if off == 0 else {}
                _, room = client.get_max_cbor_and_data_size(
                    ImageUploadWrite(off=off, data=b"", **first)
                )
                if room <= 0:
                    raise FlashError(
                        f"{self.node_id}: the SMP buffer leaves no room for data; "
                        "raise the node's buf_size"
                    )
                chunk = artifact[off : off + room]
                request = ImageUploadWrite(off=off, data=chunk, **first)
                sent += len(chunk)
                off = await self._upload_chunk(client, request)
                progress(off, total)
        except (TimeoutError, SMPTransportDisconnected, SMPClientException, BleakError) as exc:
            await self._drop()
            raise FlashError(
                f"{self.node_id}: transfer interrupted after {sent} bytes ({exc!r}); "
                "the next attempt resumes"
            ) from exc
        self._uploaded = signed
        return sent

    async def activate(self, timeout_s: float) -> NodeInfo:
        client = await self._connected()
        images = await self._model_images(client)
        wanted = self._uploaded
        if wanted is not None:
            sha = bytes.fromhex(wanted.manifest.sha256)
            target = next((i for i in images if i.hash == sha), None)
        else:
            # Uploaded by an earlier run: the verified model that has not been tested yet.
            target = next(
                (i for i in images if i.bootable and not i.active and not i.confirmed), None
            )
        if target is None or target.hash is None:
            raise FlashError(
                f"{self.node_id}: no uploaded model waits for activation; upload first"
            )
        await self._checked(client, ImageStatesWrite(hash=bytes(target.hash), confirm=False))
        await self._reset_and_wait(client, timeout_s)
        images = await self._model_images(await self._connected())
        now = next((i for i in images if i.hash == target.hash), None)
        if now is None or not (now.active and now.confirmed):
            raise NodeRefused(
                self.node_id,
                RefusalReason.SELF_TEST_FAILED,
                "the model failed its self-test on the node, which reverted to its previous slot",
            )
        return await self.info()

    async def rollback(self) -> NodeInfo:
        client = await self._connected()
        images = await self._model_images(client)
        other = next((i for i in images if not i.active and i.confirmed), None)
        if other is None or other.hash is None:
            raise FlashError(
                f"{self.node_id}: the other slot holds no confirmed model; nothing to roll back to"
            )
        await self._checked(client, ImageStatesWrite(hash=bytes(other.hash), confirm=True))
        await self._reset_and_wait(client, self.timeout_s * 2)
        return await self.info()

    async def aclose(self) -> None:
        await self._drop()

    # -- internals -----------------------------------------------------------------------

    async def _connected(self) -> SMPClient:
        if self._client is not None:
            return self._client
        client = SMPClient(self._make_transport(), self.address, timeout_s=self.timeout_s)
        try:
            await client.connect(self.timeout_s)
        except (
            TimeoutError,
            SMPClientException,
            SMPTransportDisconnected,
            BleakError,
            OSError,
        ) as exc:
            # Best effort: a half-open transport may fail to close in transport-specific ways.
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise NodeUnreachable(
                self.node_id, f"cannot open SMP on {self.address}: {exc}"
            ) from exc
        self._client = client
        return client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # Best effort: the link may already be gone (serial unplugged, BLE dropped).
            with contextlib.suppress(Exception):
                await client.disconnect()

    async def _upload_chunk(self, client: SMPClient, request: ImageUploadWrite) -> int:
        response = await client.request(request)
        if error(response):
            raise self._refused(response)
        if response.off is None:
            raise FlashError(f"{self.node_id}: the node answered an upload without an offset")
        if response.match is False:
            raise NodeRefused(self.node_id, RefusalReason.BAD_HASH, "the node's sha256 differs")
        return response.off

    async def _checked(self, client: SMPClient, request: SMPRequest[TRep, TEr1, TEr2]) -> TRep:
        try:
            response = await client.request(request)
        except (TimeoutError, SMPTransportDisconnected, BleakError) as exc:
            await self._drop()
            # issue 15: the request's name, not smpclient's repr of its header and bytes
            raise NodeUnreachable(
                self.node_id, f"no answer to {type(request).__name__} ({type(exc).__name__})"
            ) from exc
        except SMPClientException as exc:
            await self._drop()
            raise FlashError(f"{self.node_id}: bad SMP answer: {exc}") from exc
        if error(response):
            raise self._refused(response)
        return response

    async def _model_images(self, client: SMPClient) -> list[smpimg.ImageState]:
        response = await self._checked(client, ImageStatesRead())
        return [i for i in response.images if i.image == MODEL_IMAGE]

    async def _reset_and_wait(self, client: SMPClient, timeout_s: float) -> None:
        """Reset the node, then wait until it answers again (it self-tests meanwhile)."""
        await self._checked(client, ResetWrite())
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client = await self._connected()
                await client.request(ImageStatesRead(), timeout_s=_POLL_S)
                return
            except (
                TimeoutError,
                SMPClientException,
                SMPTransportDisconnected,
                NodeUnreachable,
            ) as exc:
                if time.monotonic() > deadline:
                    raise NodeUnreachable(
                        self.node_id, f"no answer within {timeout_s:.1f} s of its reset"
                    ) from exc
                if not isinstance(exc, TimeoutError):
                    # A real node drops its link when it resets; start afresh.
                    await self._drop()
                    await asyncio.sleep(_POLL_S)

    def _refused(self, response: Any) -> FlashError:
        if error_v1(response):
            reason = _REASON_BY_CODE_V1.get(int(response.rc))
            detail = response.rsn or MGMT_ERR(response.rc).name
        else:
            reason = (
                _REASON_BY_CODE.get(int(response.err.rc))
                if int(response.err.group) == smphdr.GroupId.IMAGE_MANAGEMENT
                else None
            )
            # issue 15: named by the group's own codes, never "group 1 rc 22"
            detail = rc_name(int(response.err.rc), int(response.err.group))
        if reason is None:
            return FlashError(f"{self.node_id}: the node answered an SMP error ({detail})")
        return NodeRefused(self.node_id, reason, _ADVICE[reason])


class SmpSerialFlasher(_SmpFlasher):
    """SMP over a serial port (UART, USB CDC-ACM) with SMP's base64 line framing.

    ``buf_size`` overrides the node's advertised SMP buffer (smaller requests); by default
    the client fills what the node reports (MCUmgr parameters).
    """

    transport_name = "smp-serial"

    def __init__(
        self,
        node_id: str,
        address: str,
        *,
        baud: int = 115_200,
        timeout_s: float = 5.0,
        buf_size: int | None = None,
    ) -> None:
        super().__init__(node_id, address, timeout_s=timeout_s)
        self.baud = baud
        self.buf_size = buf_size

    def _make_transport(self) -> SMPTransport:
        if self.buf_size is not None:
            return SMPSerialTransport(BufferSize(buf_size=self.buf_size), baudrate=self.baud)
        return SMPSerialTransport(baudrate=self.baud)


class SmpBleFlasher(_SmpFlasher):
    """SMP over BLE (the SMP GATT service) through bleak on the Bumble backend.

    ``address`` is the node's advertised name or its ``AA:BB:...`` address; ``hci`` names
    the controller (``usb:0``, ``tcp-client:HOST:PORT``, ``local:...``). The Bumble adapter
    for ``hci`` is shared process-wide; close it with :func:`gateway.ble.close_adapters`.
    """

    transport_name = "smp-ble"

    def __init__(self, node_id: str, address: str, *, hci: str, timeout_s: float = 5.0) -> None:
        super().__init__(node_id, address, timeout_s=timeout_s)
        self.hci = hci

    def _make_transport(self) -> SMPTransport:
        return BumbleSMPBLETransport(self.hci)


class BumbleSMPBLETransport(SMPBLETransport):
    """smpclient's BLE transport with bleak on the Bumble backend for controller ``hci``.

    Only discovery and connection differ from :class:`SMPBLETransport`, whose ``_connect``
    uses bleak's platform backend; sending, reassembly and notifications are inherited.
    """

    def __init__(self, hci: str) -> None:
        super().__init__()
        self.hci = hci
        self._pieces: asyncio.Queue[bytes] = asyncio.Queue()

    async def receive(self) -> bytes:
        """One response, reassembled from notifications by the SMP header's length.

        Replaces the inherited one, whose condition variable is left unlocked when a
        request times out (``RuntimeError: Lock is not acquired`` on the next one);
        a queue is cancel-safe.
        """
        buffer = bytearray()
        while len(buffer) < smphdr.Header.SIZE or len(buffer) < smphdr.Header.SIZE + int.from_bytes(
            buffer[2:4], "big"
        ):
            buffer.extend(await self._next_piece())
        size = smphdr.Header.SIZE + int.from_bytes(buffer[2:4], "big")
        if len(buffer) > size:
            raise SMPTransportDisconnected(f"{len(buffer) - size} stray bytes after a response")
        return bytes(buffer)

    async def _next_piece(self) -> bytes:
        if not self._pieces.empty():
            return self._pieces.get_nowait()
        if self._disconnected_event.is_set():
            raise SMPTransportDisconnected(f"{self.hci}: disconnected")
        piece = asyncio.ensure_future(self._pieces.get())
        gone = asyncio.ensure_future(self._disconnected_event.wait())
        try:
            await asyncio.wait((piece, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (piece, gone):
                task.cancel()
            await asyncio.gather(piece, gone, return_exceptions=True)
        if piece.done() and not piece.cancelled():
            return piece.result()
        raise SMPTransportDisconnected(f"{self.hci}: disconnected")

    async def _notify_callback(self, sender: Any, data: bytes) -> None:
        self._pieces.put_nowait(bytes(data))

    async def _connect(self, address: str, timeout_s: float) -> None:
        from gateway.ble import BumbleClient, BumbleScanner

        # bleak types its scanner kwargs for its own backends; ours takes bumble_transport.
        scanner_args: Any = {"backend": BumbleScanner, "bumble_transport": self.hci}
        if MAC_ADDRESS_PATTERN.match(address):
            device = await BleakScanner.find_device_by_address(
                address, timeout=timeout_s, **scanner_args
            )
        else:
            device = await BleakScanner.find_device_by_name(
                address, timeout=timeout_s, **scanner_args
            )
        if device is None:
            raise SMPBLETransportDeviceNotFound(f"Device {address!r} not found via {self.hci}")
        self._pieces = asyncio.Queue()
        self._client = BleakClient(
            device,
            services=(str(SMP_SERVICE_UUID),),
            timeout=timeout_s,
            disconnected_callback=self._set_disconnected_event,
            backend=BumbleClient,
        )
        await self._client.connect()
        self._disconnected_event.clear()
        characteristic = self._client.services.get_characteristic(SMP_CHARACTERISTIC_UUID)
        if characteristic is None:
            raise SMPBLETransportNotSMPServer(f"{address} has no SMP characteristic")
        # ATT_MTU - 3 may exceed the 512 bytes an attribute value may hold (Core spec Vol 3
        # Part F 3.2.9); servers drop such writes, so a request piece stays within 512.
        self._max_write_without_response_size = min(
            characteristic.max_write_without_response_size, _MAX_ATTRIBUTE_BYTES
        )
        self._smp_characteristic = characteristic
        await self._await_or_disconnect(
            # smpclient annotates its callback's data as bytes; bleak passes a bytearray.
            self._client.start_notify(SMP_CHARACTERISTIC_UUID, self._notify_callback)  # type: ignore[arg-type]
        )


def _parse_info(node_id: str, raw: bytes) -> NodeInfo:
    try:
        doc = cbor2.loads(raw)
        return NodeInfo(
            node_id=str(doc["node_id"]),
            target=str(doc["target"]),
            slot_bytes=int(doc["slot_bytes"]),
            ram_bytes=int(doc["ram_bytes"]),
            slots=tuple(
                SlotInfo(
                    slot=int(s["slot"]),
                    model_id=str(s["model_id"]),
                    model_version=str(s["model_version"]),
                    model_hash=bytes(s["model_hash"]),
                    sequence=int(s["sequence"]),
                    active=bool(s["active"]),
                    confirmed=bool(s["confirmed"]),
                )
                for s in doc["slots"]
            ),
        )
    except (cbor2.CBORDecodeError, KeyError, TypeError, ValueError) as exc:
        raise FlashError(f"{node_id}: the node's {INFO_PATH} is malformed: {exc!r}") from exc


async def smp_upload_goodput(
    port: str,
    artifact: bytes,
    signed: SignedManifest,
    *,
    mtu: int | None = None,
    baud: int = 115_200,
    timeout_s: float = 10.0,
) -> float:
    """Upload ``artifact`` (and its manifest) to the SMP node on serial ``port``; return
    model bytes per second over the whole transfer, manifest included.

    ``mtu`` caps the SMP message (smpclient's ``BufferSize``); None uses the node's
    advertised buffer. The node must accept the model (fresh sequence, fleet key).
    """
    flasher = SmpSerialFlasher("bench", port, baud=baud, timeout_s=timeout_s, buf_size=mtu)
    try:
        await flasher._connected()  # connection setup is not part of the transfer  # noqa: SLF001 - this module's own class: the bench times the transfer without the connection setup
        t0 = time.perf_counter()
        await flasher.upload(artifact, signed, lambda _done, _total: None)
        return len(artifact) / (time.perf_counter() - t0)
    finally:
        await flasher.aclose()
