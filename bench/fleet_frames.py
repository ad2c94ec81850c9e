"""Pre-encoded uplink messages for a cheap load generator (sans-IO: bytes out, no sockets).

A benchmark's load generator must not eat the machine it measures. The simulated fleet of
:mod:`firmware_tools.sim` runs a node's whole firmware logic per sample (signal model, numbering,
resend buffer, one ``ReadingBatch`` object, a canonical CBOR map and an MQTT client per
message); at 5k readings/s that was more than half a core. Here a node's readings are a
pre-computed signal (a ring replayed end to end and back, so it never jumps) and each message
is a byte template with fixed-width fields: a ``ReadingBatch`` is the CBOR map header with the
sequence number as a 4-byte unsigned integer, then ``batch`` samples of one record layout
(``[t: uint32, [v1..vn: float64]]``), built for a whole batch by one numpy assignment and
``tobytes()``. Fixed widths are valid CBOR (only not the shortest form), and the gateway's
decoder reads them like any other (tests/unit/bench/test_fleet_frames.py checks the decoded
message equals the one meant).

:class:`FramedNode` also pre-builds the MQTT 3.1.1 PUBLISH header (QoS 1, the topic the node
owns; the packet id is patched in) and frames for serial (COBS + CRC).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import cbor2
import numpy as np
import numpy.typing as npt

from gateway.protocol.framing import encode_frame
from gateway.protocol.messages import PROTOCOL_VERSION, Channel, TimeBase
from gateway.protocol.mqtt_topics import TopicKind, format_topic
from gateway.protocol.payload.schema import Key, MessageType


def _cbor_uint_head(major: int, n: int) -> bytes:
    """The head of a CBOR item of major type ``major`` with argument ``n`` (shortest form)."""
    if n < 24:
        return bytes([major << 5 | n])
    if n < 0x100:
        return bytes([major << 5 | 24, n])
    if n < 0x10000:
        return bytes([major << 5 | 25]) + n.to_bytes(2, "big")
    return bytes([major << 5 | 26]) + n.to_bytes(4, "big")


def sample_dtype(n_channels: int) -> np.dtype[np.void]:
    """One sample on the wire: ``0x82 (0x1a t:u32) (0x8n (0xfb v:f64)*n)``, packed."""
    fields: list[tuple[str, str]] = [("arr2", "u1"), ("u32", "u1"), ("t", ">u4"), ("arrn", "u1")]
    for k in range(n_channels):
        fields += [(f"f{k}", "u1"), (f"v{k}", ">f8")]
    return np.dtype(fields)


def mqtt_remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_connect(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT: clean session, keepalive 0 (no pings needed)."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack(">H", len(cid)) + cid
    return b"\x10" + mqtt_remaining_length(len(body)) + body


class FramedNode:
    """One node's message stream as bytes: readings from ``values`` (rows of ``channels``),
    ``batch`` samples per message, ``rate_hz`` samples per second of node uptime."""

    def __init__(
        self,
        node_id: str,
        boot_id: int,
        channels: Sequence[Channel],
        values: npt.NDArray[np.float64],
        *,
        batch: int,
        rate_hz: float,
        site: str,
    ) -> None:
        if values.ndim != 2 or values.shape[1] != len(channels) or len(values) < batch:
            raise ValueError("values must be rows of the channels, at least one batch of them")
        self.node_id = node_id
        self.batch = batch
        self.rate_hz = rate_hz
        self.seq = 1  # the next message's first sample
        n = len(channels)
        # A ring played forwards then backwards: no jump where it wraps.
        ring = np.concatenate([values, values[::-1]])
        self._records = np.zeros(len(ring), dtype=sample_dtype(n))
        rec = self._records
        rec["arr2"], rec["u32"], rec["arrn"] = 0x82, 0x1A, 0x80 | n
        for k in range(n):
            rec[f"f{k}"] = 0xFB
            rec[f"v{k}"] = ring[:, k]
        self._batch_buf = np.zeros(batch, dtype=rec.dtype)
        head = cbor2.dumps
        self._prefix = (
            _cbor_uint_head(5, 8)  # a map of 8 pairs
            + head(int(Key.VERSION)) + head(PROTOCOL_VERSION)
            + head(int(Key.TYPE)) + head(int(MessageType.READINGS))
            + head(int(Key.NODE_ID)) + head(node_id)
            + head(int(Key.BOOT_ID)) + head(boot_id)
            + head(int(Key.TIME_BASE)) + head(int(TimeBase.UPTIME_MS))
            + head(int(Key.CHANNELS)) + head([[c.name, c.unit] for c in channels])
            + head(int(Key.SEQ)) + b"\x1a"
        )  # fmt: skip
        self._samples_head = head(int(Key.SAMPLES)) + _cbor_uint_head(4, batch)
        self.payload_len = len(self._prefix) + 4 + len(self._samples_head) + batch * rec.itemsize
        topic = format_topic(site, node_id, TopicKind.READINGS).encode()
        remaining = 2 + len(topic) + 2 + self.payload_len
        self._publish_head = (
            b"\x32" + mqtt_remaining_length(remaining) + struct.pack(">H", len(topic)) + topic
        )
        self._pos = 0  # next ring record

    def payload(self, start_ms: float) -> bytes:
        """The next ReadingBatch's CBOR bytes; its first sample at uptime ``start_ms``
        (advances the sequence and the signal)."""
        rec, buf, b = self._records, self._batch_buf, self.batch
        end = self._pos + b
        if end <= len(rec):
            buf[:] = rec[self._pos : end]
        else:
            wrap = len(rec) - self._pos
            buf[:wrap], buf[wrap:] = rec[self._pos :], rec[: b - wrap]
        self._pos = end % len(rec)
        buf["t"] = (start_ms + np.arange(b) * (1000.0 / self.rate_hz)).astype(np.uint32)
        seq = self.seq
        self.seq += b
        return self._prefix + seq.to_bytes(4, "big") + self._samples_head + buf.tobytes()

    def publish(self, packet_id: int, payload: bytes) -> bytes:
        """The MQTT PUBLISH (QoS 1) of ``payload`` on this node's readings topic."""
        return self._publish_head + packet_id.to_bytes(2, "big") + payload

    @staticmethod
    def serial_frame(payload: bytes) -> bytes:
        return encode_frame(payload)
