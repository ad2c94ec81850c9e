"""MQTT 3.1.1 on the wire, client side, sans-IO: packets to bytes and bytes to packets.

Only what the gateway's broker connection speaks (OASIS MQTT 3.1.1, sections 2 and 3):
CONNECT, SUBSCRIBE, PUBLISH (QoS 0 and 1), PUBACK, PINGREQ and DISCONNECT go out;
CONNACK, SUBACK, PUBLISH, PUBACK, UNSUBACK and PINGRESP come in. No sockets here: the
connection (gateway.sources.mqtt_connection) feeds :class:`PacketReader` what it reads and
writes what the ``encode_*`` functions return. The broker-side encoders at the end
(CONNACK, SUBACK, PINGRESP) exist for tests and test servers.

:class:`PacketReader` is incremental: a packet may arrive split across any number of reads
and one read may hold many packets. It is also the hot path of MQTT ingest (one PUBLISH
per reading at a site), so a PUBLISH costs one slice for the topic, one for the payload
and one small slotted :class:`Publish`; the topic is decoded from UTF-8 when first read.

Everything malformed raises :class:`MqttWireError` (a :class:`~gateway.errors.CodecError`)
saying what is wrong and at which byte of the stream.
"""

from __future__ import annotations

import struct
from typing import Final, NoReturn

from gateway.errors import CodecError

CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
SUBSCRIBE: Final = 8
SUBACK: Final = 9
UNSUBACK: Final = 11
PINGREQ_TYPE: Final = 12
PINGRESP_TYPE: Final = 13
DISCONNECT_TYPE: Final = 14

# The largest remaining length four bytes can express (section 2.2.3).
MAX_REMAINING_LENGTH: Final = 268_435_455
SUBACK_FAILURE: Final = 0x80

PINGREQ: Final = b"\xc0\x00"
PINGRESP: Final = b"\xd0\x00"
DISCONNECT: Final = b"\xe0\x00"

CONNACK_REASONS: Final = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

_PUBACK = struct.Struct(">BBH")
_U16 = struct.Struct(">H")
# Fixed-header flags each incoming packet type must carry (PUBLISH's vary, checked apart).
_FIXED_FLAGS: Final = {CONNACK: 0, PUBACK: 0, SUBACK: 0, UNSUBACK: 0, PINGRESP_TYPE: 0}
_NAMES: Final = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
    7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
    12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT",
}  # fmt: skip


class MqttWireError(CodecError):
    """Bytes that are not a valid MQTT 3.1.1 packet from a broker."""


class Publish:
    """One received PUBLISH. ``mid`` is the packet id (0 at QoS 0); ``topic`` is decoded
    from ``topic_raw`` when read (raises ``UnicodeDecodeError`` if it is not UTF-8)."""

    __slots__ = ("dup", "mid", "payload", "qos", "retain", "topic_raw")

    def __init__(
        self, topic_raw: bytes, payload: bytes, qos: int, mid: int, *, retain: bool, dup: bool
    ) -> None:
        self.topic_raw = topic_raw
        self.payload = payload
        self.qos = qos
        self.mid = mid
        self.retain = retain
        self.dup = dup

    @property
    def topic(self) -> str:
        return self.topic_raw.decode()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Publish):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Publish(topic={self.topic_raw!r}, payload={self.payload[:32]!r}, qos={self.qos},"
            f" mid={self.mid}, retain={self.retain}, dup={self.dup})"
        )


class Connack:
    __slots__ = ("return_code", "session_present")

    def __init__(self, session_present: bool, return_code: int) -> None:
        self.session_present = session_present
        self.return_code = return_code

    @property
    def refusal(self) -> str | None:
        """Why the broker refused the connection; None when it accepted."""
        if self.return_code == 0:
            return None
        reason = CONNACK_REASONS.get(self.return_code, "reserved return code")
        return f"{reason} (CONNACK return code {self.return_code})"


class Suback:
    __slots__ = ("codes", "mid")

    def __init__(self, mid: int, codes: tuple[int, ...]) -> None:
        self.mid = mid
        self.codes = codes


class Puback:
    """A broker's PUBACK (``kind`` PUBACK) or UNSUBACK (``kind`` UNSUBACK) for ``mid``."""

    __slots__ = ("kind", "mid")

    def __init__(self, mid: int, kind: int = PUBACK) -> None:
        self.mid = mid
        self.kind = kind


class Pingresp:
    __slots__ = ()


Packet = Publish | Connack | Suback | Puback | Pingresp
_PINGRESP = Pingresp()


# -- encoding ------------------------------------------------------------------------------


def encode_remaining_length(n: int) -> bytes:
    if n < 0 or n > MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {n} is outside 0..{MAX_REMAINING_LENGTH}")
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while True:
        n, digit = divmod(n, 0x80)
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def encode_string(value: str | bytes) -> bytes:
    """A length-prefixed UTF-8 string (section 1.5.3)."""
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 0xFFFF:
        raise ValueError(f"string of {len(raw)} bytes is longer than 65535")
    return _U16.pack(len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_remaining_length(len(body)) + body


def encode_connect(
    client_id: str,
    *,
    keepalive_s: int,
    clean_session: bool = False,
    username: str | None = None,
    password: str | bytes | None = None,
) -> bytes:
    if not 0 <= keepalive_s <= 0xFFFF:
        raise ValueError(f"keepalive {keepalive_s} s is outside 0..65535")
    if password is not None and username is None:
        raise ValueError("MQTT 3.1.1 sends a password only with a user name")
    flags = 0x02 if clean_session else 0
    payload = encode_string(client_id)
    if username is not None:
        flags |= 0x80
        payload += encode_string(username)
    if password is not None:
        flags |= 0x40
        payload += encode_string(password)
    header = encode_string("MQTT") + bytes((4, flags)) + _U16.pack(keepalive_s)
    return _packet(CONNECT << 4, header + payload)


def encode_subscribe(mid: int, filters: list[tuple[str, int]]) -> bytes:
    if not filters:
        raise ValueError("SUBSCRIBE needs at least one topic filter")
    body = _U16.pack(mid) + b"".join(encode_string(f) + bytes((qos,)) for f, qos in filters)
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def encode_publish(
    topic: str | bytes,
    payload: bytes,
    qos: int = 0,
    mid: int = 0,
    *,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    """A PUBLISH; ``topic`` may be given already length-prefixed as bytes from
    :func:`encode_string` (what a connection caches per topic)."""
    if qos not in (0, 1):
        raise ValueError(f"QoS {qos} is not supported (0 or 1)")
    if qos == 0 and (mid or dup):
        raise ValueError("a QoS 0 PUBLISH has neither packet id nor DUP")
    if qos == 1 and not 0 < mid <= 0xFFFF:
        raise ValueError(f"packet id {mid} is outside 1..65535")
    head = topic if isinstance(topic, bytes) else encode_string(topic)
    first = 0x30 | qos << 1 | (0x08 if dup else 0) | (0x01 if retain else 0)
    if qos:
        head += _U16.pack(mid)
    size = len(head) + len(payload)
    if size < 0x80:
        return bytes((first, size)) + head + payload
    return bytes((first,)) + encode_remaining_length(size) + head + payload


def encode_puback(mid: int) -> bytes:
    return _PUBACK.pack(PUBACK << 4, 2, mid)


# Broker side, for tests and test servers.


def encode_connack(return_code: int, *, session_present: bool = False) -> bytes:
    return bytes((CONNACK << 4, 2, 1 if session_present else 0, return_code))


def encode_suback(mid: int, codes: list[int]) -> bytes:
    return _packet(SUBACK << 4, _U16.pack(mid) + bytes(codes))


# -- decoding ------------------------------------------------------------------------------


class PacketReader:
    """Incremental reader of a broker's byte stream: :meth:`feed` what arrived, then take
    packets with :meth:`next` until it returns None (the rest waits for more bytes).

    ``max_packet`` bounds the remaining length of one packet, so a hostile length cannot
    make the reader buffer without end.
    """

    __slots__ = ("_buf", "_consumed", "_need", "_pos", "_waiting", "_waiting_len", "max_packet")

    def __init__(self, max_packet: int = 1 << 20) -> None:
        if not 0 < max_packet <= MAX_REMAINING_LENGTH:
            raise ValueError(f"max_packet {max_packet} is outside 1..{MAX_REMAINING_LENGTH}")
        self.max_packet = max_packet
        self._buf = b""
        self._pos = 0
        self._consumed = 0  # stream offset of _buf[0], for error messages
        # Reads that arrived while a packet was incomplete, joined once it can be whole
        # (so a large packet dripping in does not cost a copy per read).
        self._waiting: list[bytes] = []
        self._waiting_len = 0
        self._need = 0  # bytes from _pos the incomplete packet needs at least

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken as packets."""
        return len(self._buf) - self._pos + self._waiting_len

    def feed(self, data: bytes) -> None:
        pos = self._pos
        if pos == len(self._buf) and not self._waiting:
            self._consumed += pos  # the usual case: nothing left over, no copy
            self._buf, self._pos = bytes(data), 0
            return
        self._waiting.append(bytes(data))
        self._waiting_len += len(data)
        if self.buffered >= self._need:
            self._consumed += pos
            self._buf = b"".join([self._buf[pos:], *self._waiting])
            self._pos = 0
            self._waiting.clear()
            self._waiting_len = 0

    def next(self) -> Packet | None:
        """The next whole packet, or None until more bytes arrive."""
        buf, pos = self._buf, self._pos
        end = len(buf)
        if end - pos < 2:
            self._need = 2
            return None
        first = buf[pos]
        size = buf[pos + 1]
        start = pos + 2
        if size & 0x80:
            size, start = self._long_length(buf, pos)
            if start < 0:
                self._need = end - pos + 1
                return None
        if size > self.max_packet:
            self._fail(f"packet of {size} bytes is larger than the maximum {self.max_packet}", pos)
        stop = start + size
        if stop > end:
            self._need = stop - pos
            return None
        self._pos = stop
        if first >> 4 == PUBLISH:
            return self._publish(first, buf, start, stop, pos)
        return self._other(first, buf, start, stop, pos)

    def _long_length(self, buf: bytes, pos: int) -> tuple[int, int]:
        """(remaining length, offset of the body); start -1 when more bytes are needed."""
        value, shift, at = 0, 0, pos + 1
        for _ in range(4):
            if at >= len(buf):
                return 0, -1
            digit = buf[at]
            value |= (digit & 0x7F) << shift
            at += 1
            if not digit & 0x80:
                return value, at
            shift += 7
        return self._fail("remaining length runs past four bytes", pos)

    def _publish(self, first: int, buf: bytes, start: int, stop: int, pos: int) -> Publish:
        qos = (first >> 1) & 3
        if qos == 3:
            self._fail("PUBLISH with QoS 3", pos)
        if qos == 2:
            self._fail("PUBLISH with QoS 2 (the gateway subscribes at QoS 1 at most)", pos)
        if stop - start < 2:
            self._fail("PUBLISH too short for its topic length", pos)
        topic_end = start + 2 + (buf[start] << 8 | buf[start + 1])
        if topic_end == start + 2:
            self._fail("PUBLISH with an empty topic", pos)
        if qos:
            body = topic_end + 2
            if body > stop:
                self._fail("PUBLISH ends inside its topic or packet id", pos)
            mid = buf[topic_end] << 8 | buf[topic_end + 1]
            if mid == 0:
                self._fail("QoS 1 PUBLISH with packet id 0", pos)
        else:
            if first & 0x08:
                self._fail("QoS 0 PUBLISH with DUP set", pos)
            body, mid = topic_end, 0
            if body > stop:
                self._fail("PUBLISH ends inside its topic", pos)
        return Publish(
            buf[start + 2 : topic_end],
            buf[body:stop],
            qos,
            mid,
            retain=bool(first & 1),
            dup=bool(first & 8),
        )

    def _other(self, first: int, buf: bytes, start: int, stop: int, pos: int) -> Packet:
        kind, flags = first >> 4, first & 0x0F
        name = _NAMES.get(kind, f"reserved type {kind}")
        expected = _FIXED_FLAGS.get(kind)
        if expected is None:
            self._fail(f"{name} is not a packet a broker sends to a client", pos)
        if flags != expected:
            self._fail(f"{name} with reserved flags {flags:#x}", pos)
        size = stop - start
        if kind == PINGRESP_TYPE:
            if size:
                self._fail(f"PINGRESP with {size} bytes of body", pos)
            return _PINGRESP
        if kind == SUBACK:
            if size < 3:
                self._fail("SUBACK without a return code", pos)
            codes = tuple(buf[start + 2 : stop])
            for code in codes:
                if code not in (0, 1, 2, SUBACK_FAILURE):
                    self._fail(f"SUBACK with invalid return code {code:#x}", pos)
            return Suback(buf[start] << 8 | buf[start + 1], codes)
        if size != 2:
            self._fail(f"{name} with remaining length {size} (must be 2)", pos)
        a, b = buf[start], buf[start + 1]
        if kind == CONNACK:
            if a & 0xFE:
                self._fail(f"CONNACK with reserved acknowledge flags {a:#x}", pos)
            return Connack(bool(a), b)
        return Puback(a << 8 | b, kind)

    def _fail(self, reason: str, pos: int) -> NoReturn:
        at = self._consumed + pos
        raw = self._buf[pos : pos + 64]
        # Nothing after a malformed packet can be trusted: the stream stays broken.
        self._pos = len(self._buf)
        raise MqttWireError(f"{reason}, packet at stream byte {at}", raw, 0)
