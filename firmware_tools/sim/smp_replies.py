"""The replies of the simulated node's SMP server: response frames and error bodies.

SMP v2 requests get group errors ``{"err": {"group", "rc"}}``, v1 requests ``{"rc", "rsn"}``
(see :mod:`firmware_tools.sim.smp_server`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2
from smp import file_management as smpfs
from smp import header as smphdr
from smp import image_management as smpimg
from smp.error import MGMT_ERR

_G_IMG, _G_FS = smphdr.GroupId.IMAGE_MANAGEMENT, smphdr.GroupId.FILE_MANAGEMENT


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back, and whether the node resets once it has been sent."""

    response: bytes
    reset: bool = False


class Failure(Exception):
    """Internal: abort a request with an SMP error body."""

    def __init__(self, body: dict[str, Any], log: str) -> None:
        super().__init__(log)
        self.body = body


FS = smpfs.FS_MGMT_ERR


def rc_body(rc: MGMT_ERR, rsn: str) -> dict[str, Any]:
    return {"rc": int(rc), "rsn": rsn}


def err_body(group: int, rc: int) -> dict[str, Any]:
    return {"err": {"group": int(group), "rc": int(rc)}}


def img_err(rc: smpimg.IMG_MGMT_ERR, v1_rc: MGMT_ERR, v1: bool, rsn: str) -> dict[str, Any]:
    return rc_body(v1_rc, rsn) if v1 else err_body(_G_IMG, rc)


def fs_err(rc: smpfs.FS_MGMT_ERR, v1_rc: MGMT_ERR, v1: bool, rsn: str) -> dict[str, Any]:
    return rc_body(v1_rc, rsn) if v1 else err_body(_G_FS, rc)


def response(request: smphdr.Header, body: dict[str, Any]) -> bytes:
    data = cbor2.dumps(body, canonical=True)
    header = smphdr.Header(
        op=smphdr.OP(request.op | 1),  # READ -> READ_RSP, WRITE -> WRITE_RSP
        version=request.version,
        flags=smphdr.Flag(0),
        length=len(data),
        group_id=request.group_id,
        sequence=request.sequence,
        command_id=request.command_id,
    )
    return bytes(header) + data


def describe(header: smphdr.Header) -> str:
    return f"{header.op.name} group {int(header.group_id)} command {int(header.command_id)}"
