"""Serial framing: COBS(payload + CRC-32) followed by a 0x00 delimiter (docs/protocol.md).

COBS removes every 0x00 from the frame body, so 0x00 marks frame ends unambiguously and a
receiver that starts mid-stream, or sees garbage, is back in step at the next 0x00.

CRC: CRC-32/ISO-HDLC (the zlib/Ethernet CRC: reflected polynomial 0xEDB88320, init and
final XOR 0xFFFFFFFF), appended little-endian. Chosen over CRC-16/CCITT because garbage
fragments after a resync would pass a 16-bit check once in 65,536, and over CRC-32C because
the standard library computes this one in C, which the gateway's ingest rate needs.

Sans-IO: :func:`encode_frame` returns bytes to write; :class:`FrameDecoder` takes whatever
bytes arrived and returns payloads and :class:`~gateway.errors.FrameError` values, so a
caller counts damaged frames and carries on. Nothing here raises on bad input.
"""

from __future__ import annotations

import zlib
from typing import Final

from gateway.errors import FrameError

DELIMITER: Final = b"\x00"
CRC_LEN: Final = 4
DEFAULT_MAX_FRAME_BYTES: Final = 4096


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC of ``data`` (check value of b"123456789" is 0xCBF43926)."""
    return zlib.crc32(data)


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result contains no 0x00.

    Output is at most ``len(data) + len(data) // 254 + 1`` bytes.
    """
    out = bytearray()
    chunks = data.split(b"\x00")
    last = len(chunks) - 1
    for i, chunk in enumerate(chunks):
        pos = 0
        n = len(chunk)
        while n - pos >= 254:
            out.append(0xFF)
            out += chunk[pos : pos + 254]
            pos += 254
        rest = n - pos
        # The final chunk needs no block when a full 0xFF block already ended it
        # (a 0xFF block implies no zero), except that empty data still encodes as 01.
        if rest or i != last or n == 0:
            out.append(rest + 1)
            out += chunk[pos:]
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of :func:`cobs_encode`. Raises :class:`FrameError` with the block's offset.

    Accepts both the minimal encoding and one with a redundant trailing 0x01 block.
    """
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("COBS: unexpected 0x00 inside a frame", data, i)
        end = i + code
        if end > n:
            raise FrameError(
                f"COBS: block at byte {i} announces {code - 1} bytes but only "
                f"{n - i - 1} remain (frame truncated?)",
                data,
                i,
            )
        out += data[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(payload: bytes) -> bytes:
    """Frame ``payload`` for the wire: COBS(payload + CRC-32 LE) + 0x00."""
    body = bytes(payload)
    body += zlib.crc32(body).to_bytes(CRC_LEN, "little")
    return cobs_encode(body) + DELIMITER


def max_encoded_len(payload_len: int) -> int:
    """Bytes between delimiters for a payload of ``payload_len`` bytes (worst case)."""
    body = payload_len + CRC_LEN
    return body + body // 254 + 1


def decode_frame_body(body: bytes) -> bytes:
    """Decode one frame without its delimiter: un-COBS, check and strip the CRC.

    Raises :class:`FrameError`; its ``raw`` is ``body`` and its ``offset`` is within it.
    """
    decoded = cobs_decode(body)
    if len(decoded) <= CRC_LEN:
        raise FrameError(
            f"frame too short: {len(decoded)} bytes after COBS, need a payload and a "
            f"{CRC_LEN}-byte CRC",
            body,
            0,
        )
    payload = decoded[:-CRC_LEN]
    sent = int.from_bytes(decoded[-CRC_LEN:], "little")
    actual = zlib.crc32(payload)
    if sent != actual:
        raise FrameError(
            f"CRC mismatch: frame says 0x{sent:08x}, payload gives 0x{actual:08x}",
            body,
            len(body) - 1,
        )
    return payload


class FrameDecoder:
    """Incremental decoder for a byte stream of frames.

    :meth:`feed` returns, in stream order, each decoded payload (``bytes``) and a
    :class:`FrameError` for each damaged frame. Results do not depend on how the stream
    is split into ``feed`` calls. Empty frames (consecutive 0x00, which senders may use
    to resynchronise) are skipped silently.

    The buffer is bounded: once the bytes since the last delimiter exceed
    ``max_frame_bytes`` one :class:`FrameError` is reported, and everything up to the
    next 0x00 is discarded without being stored.

    A ``FrameError``'s ``raw`` holds the frame body (for an oversized frame its first
    ``max_frame_bytes + 1`` bytes) and ``offset`` is within ``raw``; its reason names
    the stream offset where the frame started.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < CRC_LEN + 2:
            raise ValueError(f"max_frame_bytes must be at least {CRC_LEN + 2}")
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._discarding = False
        self._frame_start = 0  # stream offset of the first byte of the current frame
        self._stream_pos = 0  # stream offset of the next byte fed
        self.frames_ok = 0
        self.frames_bad = 0
        self.bytes_discarded = 0

    @property
    def max_payload_bytes(self) -> int:
        """Largest payload that always fits in ``max_frame_bytes`` once encoded."""
        body = self.max_frame_bytes - 1
        # Invert max_encoded_len: body + body // 254 + 1 <= max_frame_bytes.
        while body + body // 254 + 1 > self.max_frame_bytes:
            body -= 1
        return body - CRC_LEN

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | FrameError]:
        """Consume ``data``; return the payloads and errors of frames it completed."""
        out: list[bytes | FrameError] = []
        if not data:
            return out
        parts = bytes(data).split(DELIMITER)
        pos = self._stream_pos
        for part in parts[:-1]:
            self._end_frame(part, out)
            pos += len(part) + 1
            self._frame_start = pos
        tail = parts[-1]
        self._stream_pos = pos + len(tail)
        if self._discarding:
            self.bytes_discarded += len(tail)
        elif len(self._buf) + len(tail) > self.max_frame_bytes:
            head = bytes(self._buf) + tail
            self._buf.clear()
            self._discarding = True
            self.bytes_discarded += len(head)
            out.append(self._oversized(head))
        else:
            self._buf += tail
        return out

    def _oversized(self, head: bytes) -> FrameError:
        self.frames_bad += 1
        return FrameError(
            f"frame starting at stream byte {self._frame_start} is longer than "
            f"max_frame_bytes={self.max_frame_bytes}; discarding it up to the next 0x00",
            head[: self.max_frame_bytes + 1],
            self.max_frame_bytes,
        )

    def _end_frame(self, part: bytes, out: list[bytes | FrameError]) -> None:
        if self._discarding:
            # The oversized frame was reported when it crossed the limit.
            self._discarding = False
            self.bytes_discarded += len(part)
            return
        if self._buf:
            body = bytes(self._buf) + part
            self._buf.clear()
        else:
            body = part
        if not body:
            return
        if len(body) > self.max_frame_bytes:
            self.bytes_discarded += len(body)
            out.append(self._oversized(body))
            return
        try:
            payload = decode_frame_body(body)
        except FrameError as exc:
            self.frames_bad += 1
            self.bytes_discarded += len(body)
            out.append(
                FrameError(
                    f"frame starting at stream byte {self._frame_start}: {exc.reason}",
                    body,
                    exc.offset,
                )
            )
            return
        self.frames_ok += 1
        out.append(payload)
