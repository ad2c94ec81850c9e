"""Ask an MCUmgr node what it has, then pick how a model gets onto it.

Three questions, each answered by stock Zephyr MCUmgr: its parameters (buffer size and
count: how big one request may be and how many may be in flight), the enum group's list of
groups, and the image state (MCUboot slots). A node without the enum group is probed group by
group. From the answers :func:`choose_path` picks one of:

``profile``  our own node profile (its slot report file exists): the existing SMP flasher.
``fs``       stock fs group: model and signed manifest go into a directory the application
             loads from (docs/flash-model.md, "Stock Zephyr nodes").
``image``    stock img group with MCUboot: the model goes into an image slot as an MCUboot
             image.

A node that answers but offers none of these is "answered but cannot take a model" with the
reason; one that does not answer is unreachable. The two never look alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

from smp.enumeration_management import ListOfGroupsRequest
from smp.file_management import (
    FileDownloadRequest,
    FileStatusRequest,
    SupportedFileHashChecksumTypesRequest,
)
from smp.image_management import ImageStatesReadRequest
from smp.os_management import MCUMgrParametersReadRequest

from firmware_tools.flash.mcumgr.errors import (
    ENUM_GROUP,
    FS_GROUP,
    GROUP_NAMES,
    IMAGE_GROUP,
    OS_GROUP,
)
from firmware_tools.flash.mcumgr.link import McuMgrLink
from firmware_tools.flash.mcumgr.options import NodeKind

_LOGGER = logging.getLogger(__name__)
# Zephyr's defaults when a node does not answer the params command.
DEFAULT_BUF_SIZE: Final = 384
DEFAULT_BUF_COUNT: Final = 1
_ENOTSUP: Final = 8


@dataclass(frozen=True, slots=True)
class ImageSlot:
    image: int
    slot: int
    version: str
    hash: bytes
    active: bool
    confirmed: bool
    pending: bool
    bootable: bool


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a node answered about itself."""

    buf_size: int
    buf_count: int
    params_known: bool  # False: the node did not answer the params command
    groups: frozenset[int]
    hash_types: frozenset[str] = frozenset()  # fs hash/checksum types ("sha256", "crc32")
    images: tuple[ImageSlot, ...] = ()
    has_profile: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def group_names(self) -> list[str]:
        return sorted(GROUP_NAMES.get(g, str(g)) for g in self.groups)

    @property
    def max_message(self) -> int:
        """Largest SMP message one request may be: the buffer less the serial frame's
        length and CRC (4 bytes), which share it."""
        return self.buf_size - 4

    @property
    def pipeline_depth(self) -> int:
        """Requests in flight: one per buffer, keeping one for the node's reply."""
        return max(1, self.buf_count - 1)

    @property
    def pipeline_bytes(self) -> int:
        """Message bytes in flight. A stock Zephyr serial node with four 1024-byte buffers
        (native_sim) drops a third full request in flight, so full ones go two at a time;
        small ones (hash checks, a manifest) may join them up to the request count."""
        return 2 * self.max_message

    def describe(self) -> str:
        params = f"buf {self.buf_size} x {self.buf_count}" + ("" if self.params_known else " (?)")
        return f"groups {','.join(self.group_names)}; {params}"


@dataclass(frozen=True, slots=True)
class PathChoice:
    """The chosen path, or None with the reason the node cannot take a model."""

    kind: NodeKind | None
    reason: str


async def probe(link: McuMgrLink, *, profile_file: str | None = None) -> Capabilities:
    """Ask the node; raises LinkLost when it does not answer at all."""
    notes: list[str] = []
    params = await link.request(MCUMgrParametersReadRequest(), "os params", check=False)
    params_known = params.rc == 0 and "buf_size" in params.body
    buf_size = int(params.body.get("buf_size", DEFAULT_BUF_SIZE)) if params_known else 0
    buf_count = int(params.body.get("buf_count", DEFAULT_BUF_COUNT)) if params_known else 0
    if not params_known:
        notes.append("no MCUmgr params: assuming Zephyr's default 384-byte buffer")
        buf_size, buf_count = DEFAULT_BUF_SIZE, DEFAULT_BUF_COUNT
    groups = {OS_GROUP}
    listed = await link.request(ListOfGroupsRequest(), "enum list of groups", check=False)
    if listed.rc == 0 and isinstance(listed.body.get("groups"), list):
        groups |= {int(g) for g in listed.body["groups"]}
    else:
        notes.append("no enum group: probed fs and img directly")
        # A download, not fs status: every fs group implements it (our profile's nodes too).
        fs = await link.request(
            FileDownloadRequest(name=profile_file or "/", off=0), "fs download", check=False
        )
        if not (fs.rc == _ENOTSUP and fs.err_group is None):  # v1 ENOTSUP: no such group
            groups.add(FS_GROUP)
    images: tuple[ImageSlot, ...] = ()
    if IMAGE_GROUP in groups or ENUM_GROUP not in groups:
        state = await link.request(ImageStatesReadRequest(), "img state read", check=False)
        if state.rc == 0 and isinstance(state.body.get("images"), list):
            groups.add(IMAGE_GROUP)
            images = tuple(image_slot(i) for i in state.body["images"])
    hash_types: frozenset[str] = frozenset()
    if FS_GROUP in groups:
        types = await link.request(
            SupportedFileHashChecksumTypesRequest(), "fs hash types", check=False
        )
        if types.rc == 0 and isinstance(types.body.get("types"), dict):
            hash_types = frozenset(str(t) for t in types.body["types"])
    has_profile = False
    if profile_file is not None and FS_GROUP in groups:
        # fs status first: a stock node's fs download of a missing file leaves its fs
        # handle busy for seconds (requests stall meanwhile). Our profile's nodes lack
        # status (v1 ENOTSUP); for them the download answers.
        status = await link.request(FileStatusRequest(name=profile_file), "fs status", check=False)
        if status.rc == _ENOTSUP and status.err_group is None:
            status = await link.request(
                FileDownloadRequest(name=profile_file, off=0), "fs download", check=False
            )
        has_profile = status.rc == 0
    return Capabilities(
        buf_size=buf_size,
        buf_count=buf_count,
        params_known=params_known,
        groups=frozenset(groups),
        hash_types=hash_types,
        images=images,
        has_profile=has_profile,
        notes=tuple(notes),
    )


def image_slot(raw: dict[str, object]) -> ImageSlot:
    digest = raw.get("hash", b"")
    return ImageSlot(
        image=int(str(raw.get("image", 0))),
        slot=int(str(raw.get("slot", 0))),
        version=str(raw.get("version", "")),
        hash=bytes(digest) if isinstance(digest, bytes | bytearray) else b"",
        active=bool(raw.get("active", False)),
        confirmed=bool(raw.get("confirmed", False)),
        pending=bool(raw.get("pending", False)),
        bootable=bool(raw.get("bootable", False)),
    )


def choose_path(caps: Capabilities, wanted: NodeKind = NodeKind.AUTO) -> PathChoice:
    """Pick the path for ``caps``; ``wanted`` is the inventory's ``smp_kind`` (auto by default).

    Auto prefers our profile, then the fs group (a model file never replaces the node's
    firmware), then an MCUboot image slot.
    """
    has_fs = FS_GROUP in caps.groups
    has_img = IMAGE_GROUP in caps.groups and bool(caps.images)
    if wanted == NodeKind.PROFILE or (wanted == NodeKind.AUTO and caps.has_profile):
        if caps.has_profile:
            return PathChoice(NodeKind.PROFILE, "our node profile (slot report present)")
        return PathChoice(None, "the inventory says profile, but the node has no slot report")
    if wanted in (NodeKind.FS, NodeKind.AUTO) and has_fs:
        verify = "sha256" if "sha256" in caps.hash_types else "no hash command: read back"
        return PathChoice(NodeKind.FS, f"stock fs group ({verify})")
    if wanted in (NodeKind.IMAGE, NodeKind.AUTO) and has_img:
        return PathChoice(NodeKind.IMAGE, "stock img group with MCUboot slots")
    groups = ",".join(caps.group_names)
    if wanted == NodeKind.FS:
        return PathChoice(None, f"the inventory says fs, but the node has no fs group ({groups})")
    if wanted == NodeKind.IMAGE:
        return PathChoice(
            None, f"the inventory says image, but the node has no img group ({groups})"
        )
    return PathChoice(None, f"neither fs nor img group (it has {groups})")
