"""SMP reply codes by name, and which of them are worth a retry.

A reply's ``rc`` means nothing without its group: rc 3 is ``EINVAL`` in SMP version 1's
generic codes but ``FILE_NOT_FOUND`` in the fs group's. Every error the MCUmgr paths raise
names the code and what was being done (``FILE_NOT_FOUND in fs upload of
/lfs1/model.tflite``), never ``group 8 rc 3``.
"""

from __future__ import annotations

import enum
from typing import Final

from smp.error import MGMT_ERR
from smp.file_management import FS_MGMT_ERR
from smp.image_management import IMG_MGMT_ERR
from smp.os_management import OS_MGMT_RET_RC

from firmware_tools.flash.api import NodeUnreachable
from gateway.errors import FlashError

OS_GROUP: Final = 0
IMAGE_GROUP: Final = 1
FS_GROUP: Final = 8
ENUM_GROUP: Final = 10
GROUP_NAMES: Final = {
    0: "os",
    1: "img",
    2: "stat",
    3: "settings",
    4: "log",
    5: "crash",
    8: "fs",
    9: "shell",
    10: "enum",
    63: "zephyr",
}
_GROUP_CODES: Final[dict[int, type[enum.IntEnum]]] = {
    OS_GROUP: OS_MGMT_RET_RC,
    IMAGE_GROUP: IMG_MGMT_ERR,
    FS_GROUP: FS_MGMT_ERR,
}

# Codes a second try cannot change: the node lacks the thing, or refuses the content.
_PERMANENT_V1: Final = frozenset(
    {MGMT_ERR.EINVAL, MGMT_ERR.ENOENT, MGMT_ERR.ENOTSUP, MGMT_ERR.EACCESSDENIED}
)
_PERMANENT_V2: Final[dict[int, frozenset[int]]] = {
    FS_GROUP: frozenset(
        {
            FS_MGMT_ERR.FILE_INVALID_NAME,
            FS_MGMT_ERR.FILE_IS_DIRECTORY,
            FS_MGMT_ERR.MOUNT_POINT_NOT_FOUND,
            FS_MGMT_ERR.READ_ONLY_FILESYSTEM,
            FS_MGMT_ERR.CHECKSUM_HASH_NOT_FOUND,
        }
    ),
    IMAGE_GROUP: frozenset(
        {
            IMG_MGMT_ERR.INVALID_IMAGE_HEADER,
            IMG_MGMT_ERR.INVALID_IMAGE_HEADER_MAGIC,
            IMG_MGMT_ERR.INVALID_IMAGE_TOO_LARGE,
            IMG_MGMT_ERR.INVALID_IMAGE_VECTOR_TABLE,
            IMG_MGMT_ERR.CURRENT_VERSION_IS_NEWER,
            IMG_MGMT_ERR.INVALID_TLV,
            IMG_MGMT_ERR.NO_TLVS,
            IMG_MGMT_ERR.INVALID_SLOT,
            IMG_MGMT_ERR.IMAGE_CONFIRMATION_DENIED,
            IMG_MGMT_ERR.IMAGE_SETTING_TEST_TO_ACTIVE_DENIED,
        }
    ),
}


def rc_name(rc: int, group: int | None = None) -> str:
    """The name of ``rc``: the group's own code (SMP v2 ``err``) or the generic one (v1)."""
    if group is not None:
        codes = _GROUP_CODES.get(group)
        if codes is not None:
            try:
                return codes(rc).name
            except ValueError:
                pass
        return f"{GROUP_NAMES.get(group, f'group {group}')} error {rc}"
    try:
        return MGMT_ERR(rc).name
    except ValueError:
        return f"error {rc}"


def is_permanent(rc: int, group: int | None = None) -> bool:
    if group is None:
        return rc in _PERMANENT_V1
    return rc in _PERMANENT_V2.get(group, frozenset())


class SmpError(FlashError):
    """The node answered ``rc`` to a request: ``what`` says which (``fs upload of /x``)."""

    def __init__(self, node_id: str, what: str, rc: int, group: int | None = None) -> None:
        self.node_id = node_id
        self.what = what
        self.rc = rc
        self.group = group
        self.name = rc_name(rc, group)
        self.permanent = is_permanent(rc, group)
        super().__init__(f"{node_id}: {self.name} in {what}")


class LinkLost(NodeUnreachable):
    """The byte stream to the node broke or went silent (reset, unplugged, killed)."""

    def __init__(self, node_id: str, detail: str) -> None:
        super().__init__(node_id, detail)


class NoSuchPort(NodeUnreachable):
    """The serial device named in the inventory does not exist."""

    def __init__(self, node_id: str, address: str) -> None:
        super().__init__(
            node_id,
            f"no serial device {address}: is the node plugged in, and is the inventory's "
            "address right (ls /dev/serial/by-id/)?",
        )
