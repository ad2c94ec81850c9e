"""The wire protocol, sans-IO: what nodes, the gateway and flash-model say to each other.

Specified in docs/protocol.md and docs/flash-model.md. This package imports nothing of ours
but :mod:`gateway.errors` (tests/unit/test_layering.py), no sockets, no asyncio, no clock.
Every message decoder raises only :class:`gateway.errors.CodecError` subclasses; signed
manifests fail verification with :class:`~gateway.protocol.signed_manifest.VerificationError`.

Re-exported here: the message codecs. Import the model-transfer side from its modules:
:mod:`.xfer`, :mod:`.slots`, :mod:`.manifest`, :mod:`.signed_manifest` and
:mod:`.smp_profile` (which needs the ``smp`` package of the ``sim`` extra).
"""

from gateway.protocol.adv import advertising_data, decode_adv, encode_adv
from gateway.protocol.ble_chunks import ChunkDecoder, ChunkEncoder, max_chunk_for_mtu
from gateway.protocol.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    cobs_decode,
    cobs_encode,
    encode_frame,
)
from gateway.protocol.json_payload import decode_json_message, encode_json_message
from gateway.protocol.mqtt_topics import (
    TopicKind,
    TopicParts,
    decode_mqtt_payload,
    encode_mqtt_payload,
    format_topic,
    kind_of,
    parse_topic,
    topic_for,
    uplink_filters,
)
from gateway.protocol.payload import (
    MAX_MESSAGE_BYTES,
    Key,
    MessageType,
    decode_message,
    encode_message,
    validate_message,
)

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "MAX_MESSAGE_BYTES",
    "ChunkDecoder",
    "ChunkEncoder",
    "FrameDecoder",
    "Key",
    "MessageType",
    "TopicKind",
    "TopicParts",
    "advertising_data",
    "cobs_decode",
    "cobs_encode",
    "decode_adv",
    "decode_json_message",
    "decode_message",
    "decode_mqtt_payload",
    "encode_adv",
    "encode_frame",
    "encode_json_message",
    "encode_message",
    "encode_mqtt_payload",
    "format_topic",
    "kind_of",
    "max_chunk_for_mtu",
    "parse_topic",
    "topic_for",
    "uplink_filters",
    "validate_message",
]
