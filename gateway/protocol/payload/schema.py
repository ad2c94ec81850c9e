"""Schema of the CBOR messages: integer keys, message types and the limits
(docs/protocol.md, "Messages" and "Limits"). Shared by the CBOR and the JSON form.
"""

from __future__ import annotations

import enum
from typing import Final

from gateway.protocol.messages import (
    Ack,
    Command,
    CommandKind,
    NodeInference,
    ReadingBatch,
    Status,
)

# -- limits (docs/protocol.md, "Limits") ----------------------------------------------------

MAX_MESSAGE_BYTES: Final = 65_536
MAX_SAMPLES: Final = 1024
MAX_CHANNELS: Final = 32
MAX_CHANNEL_NAME_LEN: Final = 32
MAX_UNIT_LEN: Final = 16
MAX_TEXT_LEN: Final = 64  # model_id, firmware_version, string command arguments
MAX_VERSION_LEN: Final = 32  # model_version
MAX_SLOTS: Final = 8
MAX_SLOT_NUMBER: Final = 7
MAX_ARGS: Final = 16
MAX_ARG_KEY_LEN: Final = 32
MODEL_HASH_LEN: Final = 8
U16_MAX: Final = 0xFFFF
U32_MAX: Final = 0xFFFF_FFFF
TIME_MAX: Final = 2**63 - 1  # t and uptime fit a signed 64-bit SQLite integer
INT_ARG_MIN: Final = -(2**63)
INT_ARG_MAX: Final = 2**63 - 1
# An integer sent where a float is expected must convert to a float exactly.
FLOAT_SAFE_INT: Final = 2**53

NAME_ALPHABET: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
)
# The deepest valid message is map > samples > sample > values; a little slack for
# unknown keys a newer node may add, but far from what could exhaust the C stack.
MAX_DEPTH: Final = 16


class MessageType(enum.IntEnum):
    """Value of key 1."""

    READINGS = 1
    INFERENCE = 2
    STATUS = 3
    ACK = 4
    COMMAND = 5


class Key(enum.IntEnum):
    """The map keys. One table for all message types so firmware needs one enum."""

    VERSION = 0
    TYPE = 1
    NODE_ID = 2
    BOOT_ID = 3
    SEQ = 4
    TIME_BASE = 5
    T = 6
    CHANNELS = 7
    SAMPLES = 8
    MODEL_ID = 9
    MODEL_VERSION = 10
    MODEL_HASH = 11
    SCORE = 12
    LABEL = 13
    LATENCY_US = 14
    UPTIME_MS = 15
    BATTERY_MV = 16
    RSSI_DBM = 17
    FREE_RAM_BYTES = 18
    FIRMWARE_VERSION = 19
    OLDEST_UNACKED_SEQ = 20
    SLOTS = 21
    UP_TO_SEQ = 22
    CMD_ID = 23
    KIND = 24
    ARGS = 25


MESSAGE_TYPES: Final[dict[type, MessageType]] = {
    ReadingBatch: MessageType.READINGS,
    NodeInference: MessageType.INFERENCE,
    Status: MessageType.STATUS,
    Ack: MessageType.ACK,
    Command: MessageType.COMMAND,
}

# Arguments each command needs (extra arguments are allowed and passed through).
REQUIRED_ARGS: Final[dict[CommandKind, tuple[tuple[str, str], ...]]] = {
    CommandKind.SET_THRESHOLD: (("threshold", "number"),),
    CommandKind.ACTUATE: (("output", "text"), ("state", "bool")),
    CommandKind.REQUEST_INFO: (),
    CommandKind.REBOOT: (),
}


FIELD_NAMES: Final[dict[Key, str]] = {k: k.name.lower() for k in Key}
FIELD_NAMES[Key.VERSION] = "v"
FIELD_NAMES[Key.TYPE] = "type"
FIELD_NAMES[Key.KIND] = "kind"
