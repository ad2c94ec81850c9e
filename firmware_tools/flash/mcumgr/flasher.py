"""The smp-serial flasher: capabilities first, then our profile, the fs path or the image path.

:class:`McuMgrFlasher` is the :class:`~firmware_tools.flash.api.NodeFlasher` for every
``smp-serial`` node. Its first request of a run asks the node what it has
(:mod:`~firmware_tools.flash.mcumgr.capabilities`) and picks the path; ``info`` and
``--dry-run`` report it. A node of our own profile is handed to the profile's flasher
(imported only then); a stock node goes through :class:`FsPath` or :class:`ImagePath`.

Every failure is a :class:`~gateway.errors.FlashError` for the orchestrator: the link lost
(port gone, node reset or killed) as :class:`NodeUnreachable` (retried; transfers resume),
an error reply as :class:`SmpError` naming its code (permanent ones are not retried), a node
that answers but offers no path as :class:`CannotTakeModel`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from smp.os_management import ResetWriteRequest

from firmware_tools.flash.api import NodeFlasher, NodeUnreachable, ProgressCallback
from firmware_tools.flash.mcumgr.capabilities import (
    Capabilities,
    NodeKind,
    PathChoice,
    choose_path,
    probe,
)
from firmware_tools.flash.mcumgr.errors import LinkLost
from firmware_tools.flash.mcumgr.fs_path import FsLayout, FsPath
from firmware_tools.flash.mcumgr.image_path import ImagePath
from firmware_tools.flash.mcumgr.link import McuMgrLink
from firmware_tools.flash.mcumgr.options import McuMgrOptions
from gateway.errors import FlashError
from gateway.protocol.manifest import DEFAULT_TARGET, TARGET_CLASSES
from gateway.protocol.messages import SlotInfo
from gateway.protocol.signed_manifest import SignedManifest
from gateway.protocol.slots import NodeInfo

_LOGGER = logging.getLogger(__name__)
# Our node profile's slot report (docs/flash-model.md, "SMP (MCUmgr)").
PROFILE_INFO_PATH: Final = "/model/info.cbor"
_POLL_S: Final = 0.3


class CannotTakeModel(FlashError):
    """The node answered but offers no way to take a model (``reason`` says why)."""

    def __init__(self, node_id: str, reason: str) -> None:
        self.node_id = node_id
        self.reason = reason
        super().__init__(f"{node_id}: answered but cannot take a model: {reason}")


class McuMgrFlasher:
    """One MCUmgr node on a serial port, pty or ``socket://`` UART."""

    transport_name = "smp-serial"

    def __init__(
        self,
        node_id: str,
        address: str,
        *,
        baud: int = 115_200,
        timeout_s: float = 5.0,
        options: McuMgrOptions | None = None,
        target: str | None = None,
        fleet_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self._node_id = node_id
        self.address = address
        self.baud = baud
        self.timeout_s = timeout_s
        self.options = options or McuMgrOptions()
        self.target = target
        self.fleet_key = fleet_key  # Ed25519 private key for image-path signatures
        self.link = McuMgrLink(node_id, address, baud=baud, timeout_s=timeout_s)
        self.caps: Capabilities | None = None
        self.choice: PathChoice | None = None
        self._profile: NodeFlasher | None = None
        self._image_path: ImagePath | None = None
        self._fs_path: FsPath | None = None

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def transport(self) -> str:
        return self.transport_name

    # -- capabilities --------------------------------------------------------------------

    async def capabilities(self) -> tuple[Capabilities, PathChoice]:
        """Ask the node (once per flasher) and pick the path; raises NodeUnreachable."""
        if self.caps is None or self.choice is None:
            await self.link.open()
            caps = await probe(self.link, profile_file=PROFILE_INFO_PATH)
            self.caps, self.choice = caps, choose_path(caps, self.options.kind)
            _LOGGER.info(
                "%s: %s -> %s", self.node_id, caps.describe(), self.choice.kind or "no path"
            )
        return self.caps, self.choice

    async def _path(self) -> NodeKind:
        _caps, choice = await self.capabilities()
        if choice.kind is None:
            raise CannotTakeModel(self.node_id, choice.reason)
        if choice.kind is not NodeKind.PROFILE:
            await self.link.open()  # reopened after a reset or a lost link
        return choice.kind

    async def _profile_flasher(self) -> NodeFlasher:
        if self._profile is None:
            # Our own node profile keeps its flasher; it opens the port itself.
            from firmware_tools.flash.smp_flasher import SmpSerialFlasher

            await self.link.close()
            self._profile = SmpSerialFlasher(
                self.node_id, self.address, baud=self.baud, timeout_s=self.timeout_s
            )
        return self._profile

    def _fs(self) -> FsPath:
        assert self.caps is not None  # _path() ran first
        if self._fs_path is None or self._fs_path.caps is not self.caps:
            self._fs_path = FsPath(self.link, self.caps, FsLayout(self.options.model_dir))
        return self._fs_path

    def _image(self) -> ImagePath:
        assert self.caps is not None  # _path() ran first
        if self._image_path is None or self._image_path.caps is not self.caps:
            wrapped = self._image_path.wrapped if self._image_path is not None else None
            self._image_path = ImagePath(
                self.link,
                self.caps,
                self.options.image_number,
                self.fleet_key,
                self.options.image_firmware,
            )
            self._image_path.wrapped = wrapped
        return self._image_path

    # -- NodeFlasher ---------------------------------------------------------------------

    async def info(self) -> NodeInfo:
        kind = await self._path()
        if kind is NodeKind.PROFILE:
            info = await (await self._profile_flasher()).info()
            return _with_path(info, self._path_text())
        if kind is NodeKind.FS:
            signed = await self._fs().current()
            return self._stock_info(
                [] if signed is None else [_slot(signed, 0, True, True)],
                held_target=None if signed is None else signed.manifest.target,
            )
        return self._stock_info(await self._image().slots())

    async def upload(
        self, artifact: bytes, signed: SignedManifest, progress: ProgressCallback
    ) -> int:
        kind = await self._path()
        if kind is NodeKind.PROFILE:
            return await (await self._profile_flasher()).upload(artifact, signed, progress)
        if kind is NodeKind.FS:
            return await self._fs().upload(artifact, signed, progress)
        return await self._image().upload(artifact, signed, progress)

    async def activate(self, timeout_s: float) -> NodeInfo:
        kind = await self._path()
        if kind is NodeKind.PROFILE:
            return _with_path(
                await (await self._profile_flasher()).activate(timeout_s), self._path_text()
            )
        if kind is NodeKind.FS:
            if self.options.fs_activate == "reset":
                await self.reset_and_wait(timeout_s)
            return await self.info()
        await self._image().activate(self, timeout_s)
        return await self.info()

    async def rollback(self) -> NodeInfo:
        kind = await self._path()
        if kind is NodeKind.PROFILE:
            return await (await self._profile_flasher()).rollback()
        if kind is NodeKind.FS:
            raise FlashError(
                f"{self.node_id}: an fs-group node keeps one model file; flash the previous "
                "model again (its manifest needs a higher sequence)"
            )
        await self._image().rollback(self, timeout_s=self.timeout_s * 6)
        return await self.info()

    async def aclose(self) -> None:
        await self.link.close()
        if self._profile is not None:
            await self._profile.aclose()

    # -- shared by the paths ---------------------------------------------------------------

    async def reset_and_wait(self, timeout_s: float) -> None:
        """``os reset``, then wait until the node answers again (it reboots meanwhile)."""
        # A USB CDC node (or native_sim) drops the port as it resets: that is the reset.
        with contextlib.suppress(LinkLost):
            await self.link.request(ResetWriteRequest(), "os reset", timeout_s=self.timeout_s)
        await asyncio.sleep(_POLL_S)
        deadline = time.monotonic() + timeout_s
        self.caps = self.choice = None
        while True:
            try:
                await self.link.close()
                await self.link.open()
                await self.capabilities()
                return
            except NodeUnreachable as exc:  # the port may be gone while the node reboots
                if time.monotonic() > deadline:
                    raise LinkLost(
                        self.node_id, f"no answer within {timeout_s:.0f} s of its reset"
                    ) from exc
                await asyncio.sleep(_POLL_S)

    def _path_text(self) -> str:
        if self.caps is None or self.choice is None:
            return ""
        return f"{self.choice.reason}; {self.caps.describe()}"

    def _stock_info(self, slots: list[SlotInfo], held_target: str | None = None) -> NodeInfo:
        # A stock node does not say its target class: the inventory's (set it for stock
        # nodes), else that of the model it holds, else the default.
        target = self.target or held_target or DEFAULT_TARGET
        tc = TARGET_CLASSES[target]
        return NodeInfo(
            node_id=self.node_id,
            target=target,
            slot_bytes=tc.flash_bytes,
            ram_bytes=tc.ram_bytes,
            slots=tuple(slots),
            path=self._path_text(),
        )


def _slot(signed: SignedManifest, slot: int, active: bool, confirmed: bool) -> SlotInfo:
    m = signed.manifest
    return SlotInfo(
        slot=slot,
        model_id=m.name,
        model_version=m.version,
        model_hash=bytes.fromhex(m.sha256)[:8],
        sequence=m.sequence,
        active=active,
        confirmed=confirmed,
    )


def _with_path(info: NodeInfo, path: str) -> NodeInfo:
    return NodeInfo(
        node_id=info.node_id,
        target=info.target,
        slot_bytes=info.slot_bytes,
        ram_bytes=info.ram_bytes,
        slots=info.slots,
        path=path,
    )
