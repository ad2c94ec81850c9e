"""Our binary model transfer: sans-IO codec and the sender's window (docs/protocol.md §10).

The same payloads travel as COBS+CRC frames on a node's normal serial port and as MQTT
payloads on ``fieldgate/<site>/<node>/fw/down`` (host → node) and ``.../fw/up`` (node →
host). Every payload starts with :data:`MAGIC` (0xFC): a CBOR message always starts with a
map header (0xA0-0xBF) and 0xFC is a reserved CBOR initial byte, so the gateway's message
decoder rejects these as malformed instead of misreading them, and a node tells the two
apart by the first byte.

Layout after ``MAGIC, op`` (little-endian integers)::

    BEGIN    0x01  req u16, size u32, chunk u16, window u8, signed manifest (CBOR envelope)
    CHUNK    0x02  offset u32, crc32 u32 (of data), data (1..MAX_CHUNK_BYTES)
    END      0x03  req u16
    ACTIVATE 0x04  req u16
    INFO     0x05  req u16
    ROLLBACK 0x06  req u16
    OFFSET   0x81  req u16, offset u32, chunk u16, window u8        (answer to BEGIN)
    ACK      0x82  offset u32                                       (cumulative, durable)
    NACK     0x83  offset u32, why u8                               (resend from offset)
    RESULT   0x84  req u16, outcome u8, reason u8, detail_len u16, detail utf-8,
                   has_info u8, [info]
    info: node_id s8, target s8, slot_bytes u32, ram_bytes u32, n u8,
          n x (slot u8, flags u8 (1 active, 2 confirmed), sequence u32, hash 8 bytes,
                model_id s8, model_version s8)          where s8 = len u8 + utf-8

:func:`encode` and :func:`decode` are pure; :func:`decode` raises only :class:`XferCodecError`.
:class:`ChunkSender` is the host's go-back-N window over an artifact.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, field
from typing import Final

from gateway.errors import PayloadError
from gateway.protocol.messages import SlotInfo
from gateway.protocol.slots import NodeInfo, RefusalReason

MAGIC: Final = 0xFC
MAX_CHUNK_BYTES: Final = 3072  # fits a 4096-byte serial frame with headers and COBS overhead
MAX_WINDOW: Final = 64
DEFAULT_CHUNK_BYTES: Final = 1024
DEFAULT_WINDOW: Final = 8


class XferCodecError(PayloadError):
    """A transfer payload that does not decode."""


class Op(enum.IntEnum):
    BEGIN = 0x01
    CHUNK = 0x02
    END = 0x03
    ACTIVATE = 0x04
    INFO = 0x05
    ROLLBACK = 0x06
    OFFSET = 0x81
    ACK = 0x82
    NACK = 0x83
    RESULT = 0x84


class NackWhy(enum.IntEnum):
    CRC = 1  # the chunk's data does not match its crc32
    GAP = 2  # the chunk does not start at the next expected offset
    IDLE = 3  # no transfer is in progress (BEGIN first)


class ResultOutcome(enum.IntEnum):
    OK = 0  # END verified / INFO / ROLLBACK done
    REFUSED = 1  # see reason
    CONFIRMED = 2  # ACTIVATE: self-test passed, new slot confirmed and active
    REVERTED = 3  # ACTIVATE: self-test failed, old slot active again
    ERROR = 4  # a request that makes no sense now (detail says why)


# Wire codes of refusal reasons; 0 means none. Append only.
_REASON_CODES: Final = {
    RefusalReason.BAD_SIGNATURE: 1,
    RefusalReason.UNSIGNED: 2,
    RefusalReason.BAD_HASH: 3,
    RefusalReason.OLD_SEQUENCE: 4,
    RefusalReason.WRONG_TARGET: 5,
    RefusalReason.NO_SPACE: 6,
    RefusalReason.SELF_TEST_FAILED: 7,
    RefusalReason.BUSY: 8,
}
_REASONS_BY_CODE: Final = {code: reason for reason, code in _REASON_CODES.items()}


@dataclass(frozen=True, slots=True)
class Begin:
    req: int
    size: int
    chunk_bytes: int
    window: int
    signed_manifest: bytes  # the CBOR envelope (firmware_tools.signing); empty: unsigned


@dataclass(frozen=True, slots=True)
class Chunk:
    offset: int
    data: bytes
    crc: int = field(default=-1)  # -1: computed on encode

    @classmethod
    def of(cls, offset: int, data: bytes) -> Chunk:
        return cls(offset, data, zlib.crc32(data))

    @property
    def crc_ok(self) -> bool:
        return self.crc == zlib.crc32(self.data)


@dataclass(frozen=True, slots=True)
class Request:
    """END, ACTIVATE, INFO or ROLLBACK: an op and a request id."""

    op: Op
    req: int


@dataclass(frozen=True, slots=True)
class Offset:
    req: int
    offset: int
    chunk_bytes: int
    window: int


@dataclass(frozen=True, slots=True)
class ChunkAck:
    offset: int  # every byte below is stored durably


@dataclass(frozen=True, slots=True)
class ChunkNack:
    offset: int  # resend from here
    why: NackWhy


@dataclass(frozen=True, slots=True)
class Result:
    req: int
    outcome: ResultOutcome
    reason: RefusalReason | None = None
    detail: str = ""
    info: NodeInfo | None = None


XferMessage = Begin | Chunk | Request | Offset | ChunkAck | ChunkNack | Result
_REQUEST_OPS: Final = frozenset({Op.END, Op.ACTIVATE, Op.INFO, Op.ROLLBACK})


def is_xfer_payload(payload: bytes) -> bool:
    """True when ``payload`` belongs to this protocol (not a CBOR node message)."""
    return payload[:1] == bytes((MAGIC,))


# -- encoding ----------------------------------------------------------------------------------


def encode(msg: XferMessage) -> bytes:
    """The payload for ``msg`` (frame it for serial; publish it as is on MQTT)."""
    match msg:
        case Begin():
            return (
                struct.pack(
                    "<BBHIHB", MAGIC, Op.BEGIN, msg.req, msg.size, msg.chunk_bytes, msg.window
                )
                + msg.signed_manifest
            )
        case Chunk():
            crc = zlib.crc32(msg.data) if msg.crc < 0 else msg.crc
            return struct.pack("<BBII", MAGIC, Op.CHUNK, msg.offset, crc) + msg.data
        case Request():
            return struct.pack("<BBH", MAGIC, msg.op, msg.req)
        case Offset():
            return struct.pack(
                "<BBHIHB", MAGIC, Op.OFFSET, msg.req, msg.offset, msg.chunk_bytes, msg.window
            )
        case ChunkAck():
            return struct.pack("<BBI", MAGIC, Op.ACK, msg.offset)
        case ChunkNack():
            return struct.pack("<BBIB", MAGIC, Op.NACK, msg.offset, msg.why)
        case Result():
            detail = msg.detail.encode()[:1024]
            reason = 0 if msg.reason is None else _REASON_CODES[msg.reason]
            out = struct.pack(
                "<BBHBBH", MAGIC, Op.RESULT, msg.req, msg.outcome, reason, len(detail)
            )
            out += detail
            if msg.info is None:
                return out + b"\x00"
            return out + b"\x01" + _encode_info(msg.info)
    raise TypeError(f"not a transfer message: {msg!r}")


def _s8(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"{text[:20]!r}...: longer than 255 bytes")
    return bytes((len(raw),)) + raw


def _encode_info(info: NodeInfo) -> bytes:
    out = bytearray(_s8(info.node_id) + _s8(info.target))
    out += struct.pack("<IIB", info.slot_bytes, info.ram_bytes, len(info.slots))
    for s in info.slots:
        flags = (1 if s.active else 0) | (2 if s.confirmed else 0)
        out += struct.pack("<BBI", s.slot, flags, s.sequence)
        out += s.model_hash[:8].ljust(8, b"\x00")
        out += _s8(s.model_id) + _s8(s.model_version)
    return bytes(out)


# -- decoding ----------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def unpack(self, fmt: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise XferCodecError(f"truncated: need {size} more bytes", self.data, self.pos)
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise XferCodecError(f"truncated: need {n} more bytes", self.data, self.pos)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def text(self, n: int) -> str:
        at = self.pos
        raw = self.take(n)
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise XferCodecError("text is not UTF-8", self.data, at) from exc

    def s8(self) -> str:
        (n,) = self.unpack("<B")
        return self.text(n)

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise XferCodecError(
                f"{len(self.data) - self.pos} unexpected trailing bytes", self.data, self.pos
            )


def decode(payload: bytes) -> XferMessage:
    """Parse one transfer payload. Raises :class:`XferCodecError` for anything malformed."""
    data = bytes(payload)
    if len(data) < 2 or data[0] != MAGIC:
        raise XferCodecError("not a transfer payload (first byte must be 0xFC)", data, 0)
    try:
        op = Op(data[1])
    except ValueError:
        raise XferCodecError(f"unknown op 0x{data[1]:02x}", data, 1) from None
    r = _Reader(data, 2)
    msg: XferMessage
    if op is Op.BEGIN:
        req, size, chunk, window = r.unpack("<HIHB")
        _check_window(data, chunk, window)
        msg = Begin(req, size, chunk, window, r.rest())
    elif op is Op.CHUNK:
        offset, crc = r.unpack("<II")
        body = r.rest()
        if not body or len(body) > MAX_CHUNK_BYTES:
            raise XferCodecError(f"chunk of {len(body)} bytes", data, 10)
        msg = Chunk(offset, body, crc)
    elif op in _REQUEST_OPS:
        (req,) = r.unpack("<H")
        msg = Request(op, req)
    elif op is Op.OFFSET:
        req, offset, chunk, window = r.unpack("<HIHB")
        _check_window(data, chunk, window)
        msg = Offset(req, offset, chunk, window)
    elif op is Op.ACK:
        (offset,) = r.unpack("<I")
        msg = ChunkAck(offset)
    elif op is Op.NACK:
        offset, why = r.unpack("<IB")
        try:
            msg = ChunkNack(offset, NackWhy(why))
        except ValueError:
            raise XferCodecError(f"unknown NACK reason {why}", data, r.pos - 1) from None
    else:
        msg = _decode_result(r)
    r.end()
    return msg


def _check_window(data: bytes, chunk: int, window: int) -> None:
    if not 1 <= chunk <= MAX_CHUNK_BYTES or not 1 <= window <= MAX_WINDOW:
        raise XferCodecError(
            f"chunk {chunk} / window {window} out of range (1..{MAX_CHUNK_BYTES}, 1..{MAX_WINDOW})",
            data,
            2,
        )


def _decode_result(r: _Reader) -> Result:
    req, outcome_code, reason_code, detail_len = r.unpack("<HBBH")
    try:
        outcome = ResultOutcome(outcome_code)
    except ValueError:
        raise XferCodecError(f"unknown outcome {outcome_code}", r.data, 4) from None
    if reason_code and reason_code not in _REASONS_BY_CODE:
        raise XferCodecError(f"unknown refusal reason {reason_code}", r.data, 5)
    reason = _REASONS_BY_CODE.get(reason_code)
    detail = r.text(detail_len)
    (has_info,) = r.unpack("<B")
    if has_info > 1:
        raise XferCodecError("has_info must be 0 or 1", r.data, r.pos - 1)
    info = _decode_info(r) if has_info else None
    return Result(req, outcome, reason, detail, info)


def _decode_info(r: _Reader) -> NodeInfo:
    node_id = r.s8()
    target = r.s8()
    slot_bytes, ram_bytes, n = r.unpack("<IIB")
    slots = []
    for _ in range(n):
        slot, flags, sequence = r.unpack("<BBI")
        model_hash = r.take(8)
        model_id = r.s8()
        version = r.s8()
        slots.append(
            SlotInfo(
                slot, model_id, version, model_hash, sequence, bool(flags & 1), bool(flags & 2)
            )
        )
    return NodeInfo(node_id, target, slot_bytes, ram_bytes, tuple(slots))


# -- the sender's window -----------------------------------------------------------------------


class ChunkSender:
    """Go-back-N over ``data[start:]``: at most ``window`` chunks unacknowledged.

    Drive it with :meth:`next_chunks` (what may go out now), :meth:`on_ack`, :meth:`on_nack`
    and :meth:`on_timeout` (no progress for a while: resend from the last acknowledged
    offset). ``acked`` only grows; the transfer is complete when :attr:`done`.
    """

    def __init__(self, data: bytes, *, start: int, chunk_bytes: int, window: int) -> None:
        if not 0 <= start <= len(data):
            raise ValueError(f"start {start} outside 0..{len(data)}")
        if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES or not 1 <= window <= MAX_WINDOW:
            raise ValueError("chunk_bytes or window out of range")
        self.data = data
        self.chunk_bytes = chunk_bytes
        self.window = window
        self.acked = start
        self.next = start
        self.bytes_sent = 0
        self.resends = 0
        self._rewound_to = -1  # ignore further NACKs for the gap we already went back for

    @property
    def done(self) -> bool:
        return self.acked >= len(self.data)

    @property
    def in_flight(self) -> int:
        return self.next - self.acked

    def next_chunks(self) -> list[Chunk]:
        out = []
        limit = min(len(self.data), self.acked + self.window * self.chunk_bytes)
        while self.next < limit:
            end = min(self.next + self.chunk_bytes, len(self.data))
            out.append(Chunk.of(self.next, self.data[self.next : end]))
            self.bytes_sent += end - self.next
            self.next = end
        return out

    def on_ack(self, offset: int) -> bool:
        """Record a cumulative ACK; True when it moved the window."""
        if offset <= self.acked or offset > len(self.data):
            return False
        self.acked = offset
        self.next = max(self.next, offset)
        return True

    def on_nack(self, offset: int) -> None:
        self.on_ack(offset)
        if offset == self._rewound_to or offset < self.acked or offset >= self.next:
            return  # a later chunk of the same gap, or old news
        self._rewound_to = offset
        self.resends += 1
        self.next = offset

    def on_timeout(self) -> None:
        if self.next > self.acked:
            self.resends += 1
        self.next = self.acked
        self._rewound_to = -1
