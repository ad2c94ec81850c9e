"""Chunking of CBOR messages over GATT notifications and writes (docs/protocol.md).

A notification or write carries at most ATT_MTU - 3 bytes, 20 with the default MTU, so a
message is split into chunks, each with a one-byte header::

    bit 7  FIRST: this chunk starts a message
    bit 6  LAST:  this chunk ends a message (a message that fits is FIRST|LAST)
    5..0   counter, +1 (mod 64) per chunk sent in this direction on this connection

The counter lets the receiver notice a lost chunk (e.g. across a notification queue
overflow in a host stack) instead of gluing two halves of different messages together.
Sans-IO: :class:`ChunkEncoder` and :class:`ChunkDecoder` hold only counters and a
bounded buffer. :meth:`ChunkDecoder.feed` never raises on bad input.
"""

from __future__ import annotations

from typing import Final

from gateway.errors import FrameError
from gateway.protocol.payload import MAX_MESSAGE_BYTES

FIRST: Final = 0x80
LAST: Final = 0x40
COUNTER_MASK: Final = 0x3F
DEFAULT_ATT_MTU: Final = 23
ATT_HEADER_LEN: Final = 3


def max_chunk_for_mtu(att_mtu: int) -> int:
    """Largest notification/write value for an ATT MTU (MTU minus the 3-byte ATT header)."""
    return att_mtu - ATT_HEADER_LEN


class ChunkEncoder:
    """Splits messages into chunks; one per direction per connection."""

    def __init__(self, first_counter: int = 0) -> None:
        self._counter = first_counter & COUNTER_MASK

    def split(self, message: bytes, max_chunk: int) -> list[bytes]:
        """Chunks of at most ``max_chunk`` bytes (header included) carrying ``message``."""
        if max_chunk < 2:
            raise ValueError("max_chunk must leave room for the header and one byte")
        if not message:
            raise ValueError("an empty message cannot be sent")
        room = max_chunk - 1
        pieces = [message[i : i + room] for i in range(0, len(message), room)]
        chunks = []
        for i, piece in enumerate(pieces):
            header = self._counter
            if i == 0:
                header |= FIRST
            if i == len(pieces) - 1:
                header |= LAST
            self._counter = (self._counter + 1) & COUNTER_MASK
            chunks.append(bytes((header,)) + piece)
        return chunks


class ChunkDecoder:
    """Reassembles messages from chunks; one per direction per connection.

    :meth:`feed` returns completed messages and one :class:`FrameError` per damaged
    message (lost chunk, missing start, too long). After an error, chunks are dropped
    until the next FIRST chunk.
    """

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._partial: bytearray | None = None
        self._skipping = False
        self._prev_counter: int | None = None
        self.messages_ok = 0
        self.messages_bad = 0
        self.chunks_discarded = 0

    def _error(self, reason: str, chunk: bytes, offset: int = 0) -> FrameError:
        self.messages_bad += 1
        return FrameError(reason, chunk, offset)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[bytes | FrameError]:
        data = bytes(chunk)
        out: list[bytes | FrameError] = []
        if not data:
            self.chunks_discarded += 1
            out.append(self._error("empty chunk: every chunk starts with a header byte", data))
            return out
        header = data[0]
        counter = header & COUNTER_MASK
        expected = None if self._prev_counter is None else (self._prev_counter + 1) & COUNTER_MASK
        self._prev_counter = counter
        gap = expected is not None and counter != expected
        if self._partial is not None and (gap or header & FIRST):
            lost = f"expected counter {expected}, got {counter}" if gap else "a new message began"
            out.append(
                self._error(f"message cut short after {len(self._partial)} bytes: {lost}", data, 0)
            )
            self._partial = None
        if header & FIRST:
            self._partial = bytearray()
            self._skipping = False
        elif self._partial is None:
            self.chunks_discarded += 1
            if not self._skipping:
                self._skipping = True
                out.append(
                    self._error(
                        f"chunk with counter {counter} continues a message whose start was lost",
                        data,
                        0,
                    )
                )
            if header & LAST:
                self._skipping = False
            return out
        assert self._partial is not None
        self._partial += data[1:]
        if len(self._partial) > self.max_message_bytes:
            self._partial = None
            self.chunks_discarded += 1
            self._skipping = not header & LAST
            out.append(
                self._error(
                    f"message longer than max_message_bytes={self.max_message_bytes}",
                    data,
                    0,
                )
            )
            return out
        if header & LAST:
            out.append(bytes(self._partial))
            self._partial = None
            self.messages_ok += 1
        return out
