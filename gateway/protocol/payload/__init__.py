"""The CBOR message codec shared by serial, BLE and MQTT (docs/protocol.md, "Messages").

A message is one CBOR map with small unsigned integer keys (:class:`Key`). Key 0 is the
protocol version, key 1 the message type (:class:`MessageType`); the other keys depend on
the type. Unknown keys are ignored so that a newer node can talk to an older gateway; an
unknown version or type is a :class:`~gateway.errors.PayloadError`.

Sans-IO: :func:`encode_message` and :func:`decode_message` touch no clock and no socket.
One job per module: :mod:`.schema` (keys, types, limits), :mod:`.validate`, :mod:`.encode`,
:mod:`.decode` and :mod:`.fast` (the common ReadingBatch without building error labels).
"""

from gateway.protocol.payload.decode import decode_message, message_from_map
from gateway.protocol.payload.encode import encode_message, message_to_map
from gateway.protocol.payload.schema import (
    FIELD_NAMES,
    MAX_CHANNELS,
    MAX_MESSAGE_BYTES,
    MAX_SAMPLES,
    MESSAGE_TYPES,
    Key,
    MessageType,
)
from gateway.protocol.payload.validate import validate_message

__all__ = [
    "FIELD_NAMES",
    "MAX_CHANNELS",
    "MAX_MESSAGE_BYTES",
    "MAX_SAMPLES",
    "MESSAGE_TYPES",
    "Key",
    "MessageType",
    "decode_message",
    "encode_message",
    "message_from_map",
    "message_to_map",
    "validate_message",
]
