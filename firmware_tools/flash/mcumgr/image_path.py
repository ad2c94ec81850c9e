"""The stock image-group path: the model as an MCUboot image in a slot, through img_mgmt.

Upload: the first request carries the image header (a stock node checks its magic on the
first chunk and refuses an empty one), the image length, the image number and the sha256 of
the whole upload, which names the session: after a break, the same first request makes the
node answer with the offset it already holds, and the upload goes on from there. The upload is
confirmed by the node's image state listing MCUboot's image hash in a slot.

Image 0 is the node's application: MCUboot boots whatever is there, so the model goes there
only bundled after the application's binary (``image_firmware``); a bare model is refused
before a byte is sent. Another image number holds the model alone, marked non-bootable.

Activate: image state ``test`` for that hash, ``os reset``, then the state again: the new
image active means MCUboot took it and flash-model confirms it; the old one active means the
node went back (reported as a rollback). Rollback: ``confirm`` the other slot's image and
reset; an image still on test (not confirmed) is reverted by MCUboot at that reset anyway.
An MCUboot build that cannot test-boot (RAM load, direct XIP) answers ``ENOTSUP``; that is
reported by name and not retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from smp.image_management import (
    ImageStatesReadRequest,
    ImageStatesWriteRequest,
    ImageUploadWriteRequest,
)

from firmware_tools.flash.api import NodeRefused, ProgressCallback
from firmware_tools.flash.mcumgr.capabilities import Capabilities, ImageSlot, image_slot
from firmware_tools.flash.mcumgr.errors import LinkLost
from firmware_tools.flash.mcumgr.link import McuMgrLink
from firmware_tools.flash.mcumgr.mcuboot_image import McubootImage, wrap
from gateway.errors import FlashError
from gateway.protocol.messages import SlotInfo
from gateway.protocol.signed_manifest import SignedManifest
from gateway.protocol.slots import RefusalReason

if TYPE_CHECKING:
    from firmware_tools.flash.mcumgr.flasher import McuMgrFlasher

_LOGGER = logging.getLogger(__name__)
_CBOR_BSTR_HEAD: Final = 3
_FIRST_TIMEOUT_S: Final = 30.0  # the first chunk makes the node erase the slot
_MAX_RESENDS: Final = 8  # lost chunks asked again within one attempt
_DEPTH: Final = 1  # image requests in flight (see ImagePath._send_from)


class NeedsFirmware(FlashError):
    """A bare model bound for image 0 (the node's application): no retry changes that."""

    permanent = True

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        super().__init__(
            f"{node_id}: image 0 is the node's application and MCUboot would boot the model "
            "there; set image_firmware (the application's binary: the model is appended to it) "
            "or image_number to the model's own image"
        )


class ImagePath:
    """A model in MCUboot image ``image_number`` on a stock img-group node."""

    def __init__(
        self,
        link: McuMgrLink,
        caps: Capabilities,
        image_number: int,
        key: Ed25519PrivateKey | None,
        firmware: Path | None = None,
    ) -> None:
        self.link = link
        self.caps = caps
        self.image_number = image_number
        self.key = key
        self.firmware = firmware
        self.wrapped: McubootImage | None = None

    async def state(self) -> list[ImageSlot]:
        reply = await self.link.request(ImageStatesReadRequest(), "img state read")
        images = reply.body.get("images", [])
        slots = [image_slot(i) for i in images if isinstance(i, dict)]
        return [s for s in slots if s.image == self.image_number]

    async def slots(self) -> list[SlotInfo]:
        """The image's slots as flash-model reports them (version's 4th part = sequence)."""
        return [_slot_info(s, self.image_number) for s in await self.state()]

    async def wrap(self, artifact: bytes, signed: SignedManifest) -> McubootImage:
        if self.wrapped is None:
            if self.image_number == 0 and self.firmware is None:
                raise NeedsFirmware(self.link.node_id)
            firmware = None
            if self.image_number == 0 and self.firmware is not None:
                firmware = await asyncio.to_thread(self.firmware.read_bytes)
            self.wrapped = await asyncio.to_thread(
                wrap,
                artifact,
                signed,
                self.key,
                non_bootable=self.image_number != 0,
                firmware=firmware,
            )
        return self.wrapped

    async def upload(
        self, artifact: bytes, signed: SignedManifest, progress: ProgressCallback
    ) -> int:
        image = await self.wrap(artifact, signed)
        total = len(image.data)
        if any(s.hash == image.image_hash for s in await self.state()):
            progress(total, total)
            return 0  # the node holds this very image already
        what = f"img upload of image {self.image_number}"
        first = self._request(image.data, 0, first=True)
        reply = await self.link.request(first, what, timeout_s=_FIRST_TIMEOUT_S)
        off = _offset(self.link.node_id, reply.body, what)
        start_sent = len(first.data) if off == len(first.data) else 0
        if off != len(first.data):
            _LOGGER.info(
                "%s: the node resumes image %d at byte %d",
                self.link.node_id,
                self.image_number,
                off,
            )
        progress(off, total)
        sent = start_sent + await self._send_from(image.data, off, progress)
        slots = await self.state()
        if not any(s.hash == image.image_hash for s in slots):
            raise NodeRefused(
                self.link.node_id,
                RefusalReason.BAD_HASH,
                f"no slot of image {self.image_number} reports MCUboot hash "
                f"{image.image_hash.hex()[:16]} after the upload",
            )
        return sent

    async def _send_from(self, data: bytes, off: int, progress: ProgressCallback) -> int:
        """The chunks from ``off`` on; returns the bytes the node took.

        One request in flight (:data:`_DEPTH`), whatever the node's buffer count: stock
        img_mgmt writes flash in its MCUmgr work queue while the next request arrives. Two in
        flight lost a reply in 3 of 4 uploads on mps2 (4 x 2048; the one that completed moved
        1.47x the bytes of one at a time) and in every one on the emulated nRF51 (4 x 384),
        which drops line fragments now and then even at one (``uart_mcumgr: Insufficient
        buffers``). A reply that does not come times out: the link is reopened and the chunk
        at the last offset the node answered is sent again; the node answers with the
        offset it holds (its own if it had taken more) and the upload goes on from there. A
        reply naming another offset than the one after its request restarts from that
        offset too. A node that is gone fails the reopen (unreachable).
        """
        what = f"img upload of image {self.image_number}"
        depth = _DEPTH
        taken = 0
        resends = 0
        while off < len(data):
            sent: list[ImageUploadWriteRequest] = []
            try:
                async for reply in self.link.pipeline(self._chunks(data, off, sent), depth):
                    request = sent.pop(0)
                    new_off = _offset(self.link.node_id, reply.body, what)
                    taken += max(0, new_off - off)
                    off = new_off
                    progress(off, len(data))
                    if new_off != request.off + len(request.data):
                        break  # the node names where it is: go on from there
            except LinkLost as exc:
                if resends >= _MAX_RESENDS:
                    raise
                resends += 1
                _LOGGER.info("%s: %s; asking again at byte %d", self.link.node_id, exc, off)
                await self.link.close()
                await self.link.open()
        return taken

    def _chunks(
        self, data: bytes, off: int, sent: list[ImageUploadWriteRequest]
    ) -> Iterator[tuple[ImageUploadWriteRequest, str]]:
        while off < len(data):
            request = self._request(data, off)
            sent.append(request)
            yield request, f"img upload of image {self.image_number}"
            off += len(request.data)

    async def activate(self, flasher: McuMgrFlasher, timeout_s: float) -> None:
        """Test-boot the uploaded image, then confirm it (MCUboot keeps it from then on)."""
        now = await self.test_boot(flasher, timeout_s)
        if not now.confirmed:
            await self.confirm(now)

    async def test_boot(self, flasher: McuMgrFlasher, timeout_s: float) -> ImageSlot:
        """Mark the uploaded image for a test boot and reset: MCUboot swaps it in and runs it
        once; unconfirmed, it is reverted at the next reset. Returns its slot as it runs."""
        target = await self._pending_target()
        if target.active:
            return target  # already running (an earlier attempt got this far)
        await self.link.request(
            ImageStatesWriteRequest(hash=target.hash, confirm=False),
            f"img state write (test) of image {self.image_number} slot {target.slot}",
        )
        await flasher.reset_and_wait(timeout_s)
        now = next((s for s in await self.state() if s.hash == target.hash), None)
        if now is None or not now.active:
            raise NodeRefused(
                self.link.node_id,
                RefusalReason.SELF_TEST_FAILED,
                "MCUboot did not boot the new image and the node runs its previous one",
            )
        return now

    async def confirm(self, running: ImageSlot) -> None:
        await self.link.request(
            ImageStatesWriteRequest(hash=running.hash, confirm=True),
            f"img state write (confirm) of image {self.image_number}",
        )

    async def rollback(self, flasher: McuMgrFlasher, timeout_s: float) -> None:
        """Back to the previous image.

        An active image still on test (not confirmed) is reverted by MCUboot at the next
        reset, so that is all this sends: no state write. (Zephyr 4.4's img_mgmt on an
        MCUboot in swap-using-offset mode lists a stale secondary slot then, the image from
        before the previous one; confirming that hash would boot it.) A confirmed active
        image: confirm the other listed image and reset.
        """
        slots = await self.state()
        active = next((s for s in slots if s.active), None)
        if active is not None and not active.confirmed:
            await flasher.reset_and_wait(timeout_s)
            now = next((s for s in await self.state() if s.active), None)
            if now is None or now.hash == active.hash:
                raise FlashError(
                    f"{self.link.node_id}: MCUboot kept image {self.image_number} "
                    f"{active.version} after the reset; it did not revert"
                )
            return
        other = next(
            (
                s
                for s in slots
                if not s.active and s.hash and (active is None or s.hash != active.hash)
            ),
            None,
        )
        if other is None:
            raise FlashError(
                f"{self.link.node_id}: image {self.image_number} lists no other image to go back "
                "to (an MCUboot in swap-using-offset mode stops listing it once the new one is "
                "confirmed): flash the previous model again"
            )
        await self.link.request(
            ImageStatesWriteRequest(hash=other.hash, confirm=True),
            f"img state write (confirm) of image {self.image_number} slot {other.slot}",
        )
        await flasher.reset_and_wait(timeout_s)
        now = next((s for s in await self.state() if s.active), None)
        if now is None or now.hash != other.hash:
            raise FlashError(
                f"{self.link.node_id}: MCUboot still runs image {self.image_number} "
                f"{'?' if now is None else now.version} after the rollback reset"
            )

    async def _pending_target(self) -> ImageSlot:
        wanted = self.wrapped.image_hash if self.wrapped is not None else None
        slots = await self.state()
        target = next(
            (
                s
                for s in slots
                if (s.hash == wanted if wanted else not s.active and not s.confirmed)
            ),
            None,
        )
        if target is None:
            raise FlashError(
                f"{self.link.node_id}: no uploaded image waits for activation; upload first"
            )
        return target

    def _request(self, data: bytes, off: int, *, first: bool = False) -> ImageUploadWriteRequest:
        extra: dict[str, object] = {}
        if first:
            extra = {
                "len": len(data),
                "image": self.image_number,
                "sha": hashlib.sha256(data).digest(),
            }
        empty = ImageUploadWriteRequest(off=off, data=b"", **extra)
        room = self.caps.max_message - len(empty.BYTES) - _CBOR_BSTR_HEAD
        if room <= 0:
            raise FlashError(
                f"{self.link.node_id}: the node's {self.caps.buf_size}-byte MCUmgr buffer leaves "
                "no room for image data"
            )
        return ImageUploadWriteRequest(off=off, data=data[off : off + room], **extra)


def _offset(node_id: str, body: dict[str, object], what: str) -> int:
    off = body.get("off")
    if not isinstance(off, int):
        raise FlashError(f"{node_id}: {what}: reply without an offset")
    return off


def _slot_info(s: ImageSlot, image_number: int) -> SlotInfo:
    parts = s.version.split(".")
    sequence = int(parts[3]) if len(parts) == 4 and parts[3].isdigit() else 0
    return SlotInfo(
        slot=s.slot,
        model_id=f"mcuboot-image-{image_number}",
        model_version=".".join(parts[:3]),
        model_hash=s.hash[:8],
        sequence=sequence,
        active=s.active,
        confirmed=s.confirmed,
    )
