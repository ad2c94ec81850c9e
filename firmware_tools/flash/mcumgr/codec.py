"""SMP over a console (UART, USB CDC-ACM): base64 line framing, sans-IO.

A frame on the wire is ``len(2) + SMP message + crc16(2)``, base64-encoded and cut into
lines; the first starts with ``06 09``, the others with ``04 14``, each ends with ``\\n``
(Zephyr's ``mcumgr_serial``). :class:`LineDecoder` turns received bytes into SMP messages and
skips whatever else the node prints on the same port (logs, a shell prompt). Replies are
decoded into :class:`Reply`: the header and the CBOR body as a dict, with the two error forms
(v1 ``rc``, v2 ``err: {group, rc}``) lifted out so a caller checks one field.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Any, Final

import cbor2
from smp import header as smphdr
from smp import packet as smppacket

from gateway.errors import FrameError, PayloadError

_START: Final = b"\x06\x09"
_CONTINUE: Final = b"\x04\x14"
_MAX_FRAME: Final = 64 * 1024  # far above any MCUmgr buffer; a bound on garbage
DEFAULT_LINE_LENGTH: Final = 128  # Zephyr's default CONFIG_UART_MCUMGR_RX_BUF_SIZE


def encode(message: bytes, line_length: int = DEFAULT_LINE_LENGTH) -> bytes:
    """One SMP message as the console lines a node reassembles."""
    return b"".join(smppacket.encode(message, line_length=line_length))


class LineDecoder:
    """Received bytes in, complete SMP messages out; other console output is skipped."""

    def __init__(self) -> None:
        self._line = bytearray()
        self._b64 = bytearray()
        self._in_frame = False

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        self._line.extend(data)
        while (nl := self._line.find(b"\n")) >= 0:
            line = bytes(self._line[:nl]).rstrip(b"\r")
            del self._line[: nl + 1]
            message = self._line_in(line)
            if message is not None:
                out.append(message)
        if len(self._line) > _MAX_FRAME:
            self._line.clear()
        return out

    def _line_in(self, line: bytes) -> bytes | None:
        if line.startswith(_START):
            self._b64 = bytearray(line[2:])
            self._in_frame = True
        elif line.startswith(_CONTINUE) and self._in_frame:
            self._b64.extend(line[2:])
        else:
            return None  # a log line or shell output between frames
        if len(self._b64) > _MAX_FRAME:
            self._in_frame = False
            return None
        try:
            raw = base64.b64decode(bytes(self._b64), validate=True)
        except (binascii.Error, ValueError):
            return None  # incomplete base64 so far: wait for the next line
        if len(raw) < 2:
            return None
        (length,) = struct.unpack_from("!H", raw)
        if len(raw) - 2 < length:
            return None
        self._in_frame = False
        body = raw[2 : 2 + length]
        if len(body) < 2 or smppacket.crc16_func(body[:-2]) != struct.unpack("!H", body[-2:])[0]:
            return None  # damaged: the request times out and is retried
        return body[:-2]


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMP reply: header fields, the CBOR body, and its error if it is one."""

    group: int
    command: int
    sequence: int
    body: dict[str, Any]
    rc: int = 0  # 0 = success
    err_group: int | None = None  # set for SMP v2 errors (the group's own rc)


def decode_reply(message: bytes) -> Reply:
    """Parse an SMP reply; raises :class:`FrameError`/:class:`PayloadError` on bad bytes."""
    if len(message) < smphdr.Header.SIZE:
        raise FrameError("SMP message shorter than its header", message)
    try:
        header = smphdr.Header.loads(message[: smphdr.Header.SIZE])
    except ValueError as exc:  # an op, group or command the smp package does not know
        raise FrameError(f"not an SMP header ({exc})", message) from exc
    payload = message[smphdr.Header.SIZE : smphdr.Header.SIZE + header.length]
    try:
        body = cbor2.loads(payload) if payload else {}
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise PayloadError(f"bad CBOR in SMP reply ({exc})", message, 8) from exc
    if not isinstance(body, dict):
        raise PayloadError("SMP reply is not a CBOR map", message, 8)
    rc = 0
    err_group = None
    err = body.get("err")
    try:
        if isinstance(err, dict):
            rc = int(err.get("rc", 0))
            err_group = int(err.get("group", header.group_id))
        elif "rc" in body:
            rc = int(body["rc"])
    except (TypeError, ValueError, OverflowError) as exc:
        raise PayloadError(f"SMP reply has a non-integer rc ({exc})", message, 8) from exc
    return Reply(
        group=int(header.group_id),
        command=int(header.command_id),
        sequence=int(header.sequence),
        body=body,
        rc=rc,
        err_group=err_group if rc else None,
    )
