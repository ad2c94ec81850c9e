"""Encoding: a validated message to its CBOR map and bytes (canonical CBOR)."""

from __future__ import annotations

from typing import Any

import cbor2

from gateway.errors import PayloadError
from gateway.protocol.messages import (
    PROTOCOL_VERSION,
    Ack,
    Message,
    NodeInference,
    ReadingBatch,
    Status,
)
from gateway.protocol.payload.schema import U32_MAX, Key, MessageType
from gateway.protocol.payload.validate import validate_message


def _uplink_head(msg: ReadingBatch | NodeInference | Status, mtype: MessageType) -> dict[int, Any]:
    return {
        Key.VERSION: PROTOCOL_VERSION,
        Key.TYPE: int(mtype),
        Key.NODE_ID: msg.node_id,
        Key.BOOT_ID: msg.boot_id,
        Key.SEQ: msg.seq,
        Key.TIME_BASE: int(msg.time_base),
    }


def message_to_map(msg: Message) -> dict[int, Any]:
    """The CBOR map of a (validated) message, before serialisation."""
    if isinstance(msg, ReadingBatch):
        m = _uplink_head(msg, MessageType.READINGS)
        m[Key.CHANNELS] = [[c.name, c.unit] for c in msg.channels]
        m[Key.SAMPLES] = [[s.t, s.values] for s in msg.samples]
    elif isinstance(msg, NodeInference):
        m = _uplink_head(msg, MessageType.INFERENCE)
        m[Key.T] = msg.t
        m[Key.MODEL_ID] = msg.model_id
        m[Key.MODEL_VERSION] = msg.model_version
        m[Key.MODEL_HASH] = msg.model_hash
        m[Key.SCORE] = msg.score
        m[Key.LABEL] = msg.label
        m[Key.LATENCY_US] = msg.latency_us
    elif isinstance(msg, Status):
        m = _uplink_head(msg, MessageType.STATUS)
        m[Key.T] = msg.t
        m[Key.UPTIME_MS] = msg.uptime_ms
        if msg.battery_mv is not None:
            m[Key.BATTERY_MV] = msg.battery_mv
        if msg.rssi_dbm is not None:
            m[Key.RSSI_DBM] = msg.rssi_dbm
        if msg.free_ram_bytes is not None:
            m[Key.FREE_RAM_BYTES] = msg.free_ram_bytes
        m[Key.FIRMWARE_VERSION] = msg.firmware_version
        m[Key.OLDEST_UNACKED_SEQ] = msg.oldest_unacked_seq
        if msg.slots:
            m[Key.SLOTS] = [
                [
                    s.slot,
                    s.model_id,
                    s.model_version,
                    s.model_hash,
                    s.sequence,
                    s.active,
                    s.confirmed,
                ]
                for s in msg.slots
            ]
    elif isinstance(msg, Ack):
        m = {
            Key.VERSION: PROTOCOL_VERSION,
            Key.TYPE: int(MessageType.ACK),
            Key.NODE_ID: msg.node_id,
            Key.BOOT_ID: msg.boot_id,
            Key.UP_TO_SEQ: msg.up_to_seq,
        }
    else:
        m = {
            Key.VERSION: PROTOCOL_VERSION,
            Key.TYPE: int(MessageType.COMMAND),
            Key.NODE_ID: msg.node_id,
            Key.CMD_ID: msg.cmd_id,
            Key.KIND: int(msg.kind),
        }
        if msg.args:
            # An array of pairs, not a map: canonical CBOR would sort a map's keys and
            # the decoded argument order would then differ from the sender's.
            m[Key.ARGS] = [[name, value] for name, value in msg.args]
    # Plain ints as keys: cbor2 would otherwise see IntEnum members.
    return {int(k): v for k, v in m.items()}


def encode_message(msg: Message) -> bytes:
    """Validate ``msg`` and encode it as one CBOR map.

    Floats are written in the shortest of float16/float32/float64 that holds the value
    exactly (canonical CBOR), so ``decode_message(encode_message(msg)) == msg``.
    Raises :class:`PayloadError` for an invalid message.
    """
    validate_message(msg)
    return cbor2.dumps(message_to_map(msg), canonical=True)


def ack_head(node_id: str, boot_id: int) -> bytes:
    """What every Ack of ``(node_id, boot_id)`` starts with, for :func:`encode_ack`.

    ``up_to_seq`` has the largest key of an Ack's map, so canonical CBOR writes it last:
    the bytes before it are the same for every seq. Validates ``node_id`` and ``boot_id``
    (raises :class:`PayloadError`).
    """
    # Seq 0 is the single byte 0x00 at the very end.
    return encode_message(Ack(node_id, boot_id, 0))[:-1]


def encode_ack(head: bytes, up_to_seq: int) -> bytes:
    """``encode_message(Ack(node_id, boot_id, up_to_seq))`` from ``ack_head(node_id, boot_id)``.

    An ack goes to every node after every commit; this skips rebuilding and re-validating
    the part that never changes. Raises :class:`PayloadError` for a seq out of range.
    """
    if type(up_to_seq) is not int or not 0 <= up_to_seq <= U32_MAX:
        raise PayloadError(f"Ack.up_to_seq {up_to_seq!r} is not in 0..{U32_MAX}", b"", 0)
    return head + cbor2.dumps(up_to_seq)
