"""The CBOR message codec shared by serial, BLE and MQTT (docs/protocol.md, "Messages").

A message is one CBOR map with small unsigned integer keys (:class:`Key`). Key 0 is the
protocol version, key 1 the message type (:class:`MessageType`); the other keys depend on
the type. Unknown keys are ignored so that a newer node can talk to an older gateway; an
unknown version or type is a :class:`~gateway.errors.PayloadError`.

Sans-IO: :func:`encode_message` and :func:`decode_message` touch no clock and no socket.
:func:`decode_message` raises only :class:`~gateway.errors.PayloadError`; anything else
escaping it is a bug.
"""

from __future__ import annotations

import enum
import io
import math
from collections.abc import Callable, Iterable
from typing import Any, Final, NoReturn

import cbor2

from gateway.errors import PayloadError
from gateway.models import (
    PROTOCOL_VERSION,
    Ack,
    Channel,
    Command,
    CommandKind,
    Message,
    NodeInference,
    ReadingBatch,
    Sample,
    SlotInfo,
    Status,
    TimeBase,
    is_valid_node_id,
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

_NAME_ALPHABET: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
)
# The deepest valid message is map > samples > sample > values; a little slack for
# unknown keys a newer node may add, but far from what could exhaust the C stack.
_MAX_DEPTH: Final = 16


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
_REQUIRED_ARGS: Final[dict[CommandKind, tuple[tuple[str, str], ...]]] = {
    CommandKind.SET_THRESHOLD: (("threshold", "number"),),
    CommandKind.ACTUATE: (("output", "text"), ("state", "bool")),
    CommandKind.REQUEST_INFO: (),
    CommandKind.REBOOT: (),
}


# -- validation of model objects (shared by every encoder and decoder) ----------------------


def _fail(reason: str) -> NoReturn:
    raise PayloadError(reason)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: object) -> str:
    return type(value).__name__


def _check_int(value: object, what: str, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{what}: expected an integer, got {_kind(value)}")
    if not lo <= value <= hi:
        _fail(f"{what}: {value} is out of range {lo}..{hi}")


def _check_number(value: object, what: str) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            _fail(f"{what}: {value} is not a finite number (NaN and infinities are not sent)")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -FLOAT_SAFE_INT <= value <= FLOAT_SAFE_INT:
            _fail(f"{what}: integer {value} does not convert exactly to a float")
    else:
        _fail(f"{what}: expected a number, got {_kind(value)}")


def _check_text(value: object, what: str, max_len: int, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        _fail(f"{what}: expected text, got {_kind(value)}")
    if not value and not allow_empty:
        _fail(f"{what}: must not be empty")
    if len(value) > max_len:
        _fail(f"{what}: {len(value)} characters, more than the {max_len} allowed")
    if not value.isprintable():
        _fail(f"{what}: {_show(value)} contains a control or non-printable character")


def _check_name(value: object, what: str, max_len: int) -> None:
    if not isinstance(value, str):
        _fail(f"{what}: expected text, got {_kind(value)}")
    if not 0 < len(value) <= max_len or not _NAME_ALPHABET.issuperset(value):
        _fail(f"{what}: {_show(value)} is not 1..{max_len} characters of [A-Za-z0-9._-]")


def _check_node_id(value: object, what: str) -> None:
    if not isinstance(value, str) or not is_valid_node_id(value):
        _fail(f"{what}: {_show(value)} is not 1..32 characters of [A-Za-z0-9._-]")


def _check_hash(value: object, what: str) -> None:
    if not isinstance(value, bytes):
        _fail(f"{what}: expected bytes, got {_kind(value)}")
    if len(value) != MODEL_HASH_LEN:
        _fail(f"{what}: {len(value)} bytes, expected {MODEL_HASH_LEN}")


def _check_time_base(value: object, what: str) -> None:
    if not isinstance(value, TimeBase):
        _fail(f"{what}: expected a TimeBase, got {_show(value)}")


def _check_uplink_identity(msg: ReadingBatch | NodeInference | Status, name: str) -> None:
    _check_node_id(msg.node_id, f"{name}.node_id")
    _check_int(msg.boot_id, f"{name}.boot_id", 0, U32_MAX)
    _check_int(msg.seq, f"{name}.seq", 1, U32_MAX)
    _check_time_base(msg.time_base, f"{name}.time_base")


def _check_samples(samples: Iterable[Sample], n_channels: int) -> None:
    for i, sample in enumerate(samples):
        if not isinstance(sample, Sample):
            _fail(f"ReadingBatch.samples[{i}]: expected a Sample, got {_kind(sample)}")
        t = sample.t
        if type(t) is not int or not 0 <= t <= TIME_MAX:
            _check_int(t, f"ReadingBatch.samples[{i}].t", 0, TIME_MAX)
        values = sample.values
        if not isinstance(values, tuple):
            _fail(f"ReadingBatch.samples[{i}].values: expected a tuple, got {_kind(values)}")
        if len(values) != n_channels:
            _fail(
                f"ReadingBatch.samples[{i}].values: {len(values)} values for {n_channels} channels"
            )
        for j, value in enumerate(values):
            # Fast path: a finite float; x - x is NaN exactly when x is NaN or infinite.
            if type(value) is not float or value - value != 0.0:
                _check_number(value, f"ReadingBatch.samples[{i}].values[{j}]")


def _check_reading_batch(
    msg: ReadingBatch, *, samples_checked: bool = False, channels_checked: bool = False
) -> None:
    _check_uplink_identity(msg, "ReadingBatch")
    if not channels_checked:
        _check_channels(msg.channels)
    samples = msg.samples
    if not isinstance(samples, tuple):
        _fail(f"ReadingBatch.samples: expected a tuple, got {_kind(samples)}")
    if not 0 < len(samples) <= MAX_SAMPLES:
        _fail(f"ReadingBatch.samples: {len(samples)} samples, expected 1..{MAX_SAMPLES}")
    if msg.last_seq > U32_MAX:
        _fail(
            f"ReadingBatch.seq: {len(samples)} samples from seq {msg.seq} run past "
            f"{U32_MAX}; start a new boot_id before the counter wraps"
        )
    if not samples_checked:
        _check_samples(samples, len(msg.channels))


def _check_channels(channels: object) -> None:
    if not isinstance(channels, tuple):
        _fail(f"ReadingBatch.channels: expected a tuple, got {_kind(channels)}")
    if not 0 < len(channels) <= MAX_CHANNELS:
        _fail(f"ReadingBatch.channels: {len(channels)} channels, expected 1..{MAX_CHANNELS}")
    seen: set[str] = set()
    for i, channel in enumerate(channels):
        if not isinstance(channel, Channel):
            _fail(f"ReadingBatch.channels[{i}]: expected a Channel, got {_kind(channel)}")
        _check_name(channel.name, f"ReadingBatch.channels[{i}].name", MAX_CHANNEL_NAME_LEN)
        _check_text(
            channel.unit, f"ReadingBatch.channels[{i}].unit", MAX_UNIT_LEN, allow_empty=True
        )
        if channel.name in seen:
            _fail(f"ReadingBatch.channels[{i}].name: {channel.name!r} appears twice")
        seen.add(channel.name)


def _check_inference(msg: NodeInference) -> None:
    _check_uplink_identity(msg, "NodeInference")
    _check_int(msg.t, "NodeInference.t", 0, TIME_MAX)
    _check_text(msg.model_id, "NodeInference.model_id", MAX_TEXT_LEN)
    _check_text(msg.model_version, "NodeInference.model_version", MAX_VERSION_LEN)
    _check_hash(msg.model_hash, "NodeInference.model_hash")
    _check_number(msg.score, "NodeInference.score")
    _check_int(msg.label, "NodeInference.label", 0, U16_MAX)
    _check_int(msg.latency_us, "NodeInference.latency_us", 0, U32_MAX)


def _check_slot(slot: object, what: str) -> None:
    if not isinstance(slot, SlotInfo):
        _fail(f"{what}: expected a SlotInfo, got {_kind(slot)}")
    _check_int(slot.slot, f"{what}.slot", 0, MAX_SLOT_NUMBER)
    _check_text(slot.model_id, f"{what}.model_id", MAX_TEXT_LEN)
    _check_text(slot.model_version, f"{what}.model_version", MAX_VERSION_LEN)
    _check_hash(slot.model_hash, f"{what}.model_hash")
    _check_int(slot.sequence, f"{what}.sequence", 0, U32_MAX)
    for name in ("active", "confirmed"):
        if not isinstance(getattr(slot, name), bool):
            _fail(f"{what}.{name}: expected a bool, got {_kind(getattr(slot, name))}")


def _check_status(msg: Status) -> None:
    _check_uplink_identity(msg, "Status")
    _check_int(msg.t, "Status.t", 0, TIME_MAX)
    _check_int(msg.uptime_ms, "Status.uptime_ms", 0, TIME_MAX)
    if msg.battery_mv is not None:
        _check_int(msg.battery_mv, "Status.battery_mv", 0, U16_MAX)
    if msg.rssi_dbm is not None:
        _check_int(msg.rssi_dbm, "Status.rssi_dbm", -128, 127)
    if msg.free_ram_bytes is not None:
        _check_int(msg.free_ram_bytes, "Status.free_ram_bytes", 0, U32_MAX)
    _check_text(msg.firmware_version, "Status.firmware_version", MAX_TEXT_LEN)
    _check_int(msg.oldest_unacked_seq, "Status.oldest_unacked_seq", 0, U32_MAX)
    if not isinstance(msg.slots, tuple):
        _fail(f"Status.slots: expected a tuple, got {_kind(msg.slots)}")
    if len(msg.slots) > MAX_SLOTS:
        _fail(f"Status.slots: {len(msg.slots)} slots, more than the {MAX_SLOTS} allowed")
    numbers: set[int] = set()
    for i, slot in enumerate(msg.slots):
        _check_slot(slot, f"Status.slots[{i}]")
        if slot.slot in numbers:
            _fail(f"Status.slots[{i}].slot: slot {slot.slot} appears twice")
        numbers.add(slot.slot)


def _check_ack(msg: Ack) -> None:
    _check_node_id(msg.node_id, "Ack.node_id")
    _check_int(msg.boot_id, "Ack.boot_id", 0, U32_MAX)
    _check_int(msg.up_to_seq, "Ack.up_to_seq", 0, U32_MAX)


def _check_arg_value(value: object, what: str) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        _check_int(value, what, INT_ARG_MIN, INT_ARG_MAX)
    elif isinstance(value, float):
        _check_number(value, what)
    elif isinstance(value, str):
        _check_text(value, what, MAX_TEXT_LEN, allow_empty=True)
    else:
        _fail(f"{what}: expected a number, text or bool, got {_kind(value)}")


def _check_command(msg: Command) -> None:
    _check_node_id(msg.node_id, "Command.node_id")
    _check_int(msg.cmd_id, "Command.cmd_id", 0, U32_MAX)
    if not isinstance(msg.kind, CommandKind):
        _fail(f"Command.kind: expected a CommandKind, got {_show(msg.kind)}")
    if not isinstance(msg.args, tuple):
        _fail(f"Command.args: expected a tuple of (name, value) pairs, got {_kind(msg.args)}")
    if len(msg.args) > MAX_ARGS:
        _fail(f"Command.args: {len(msg.args)} arguments, more than the {MAX_ARGS} allowed")
    args: dict[str, object] = {}
    for i, pair in enumerate(msg.args):
        if not isinstance(pair, tuple) or len(pair) != 2:
            _fail(f"Command.args[{i}]: expected a (name, value) pair, got {_show(pair)}")
        name, value = pair
        _check_name(name, f"Command.args[{i}].name", MAX_ARG_KEY_LEN)
        if name in args:
            _fail(f"Command.args[{i}].name: {name!r} appears twice")
        _check_arg_value(value, f"Command.args[{i}].value")
        args[name] = value
    for name, want in _REQUIRED_ARGS[msg.kind]:
        if name not in args:
            _fail(f"Command.args: {msg.kind.name} needs argument {name!r}")
        given = args[name]
        ok = {
            "number": isinstance(given, int | float) and not isinstance(given, bool),
            "text": isinstance(given, str),
            "bool": isinstance(given, bool),
        }[want]
        if not ok:
            _fail(
                f"Command.args: {msg.kind.name} argument {name!r} must be {want}, "
                f"got {_kind(given)}"
            )


def validate_message(msg: Message) -> None:
    """Raise :class:`PayloadError` unless ``msg`` is a message the protocol can carry.

    The reason names the field (``"ReadingBatch.samples[3].values: 2 values for 3
    channels"``). Encoders call this; decoders call it on what they built.
    """
    if isinstance(msg, ReadingBatch):
        _check_reading_batch(msg)
    elif isinstance(msg, NodeInference):
        _check_inference(msg)
    elif isinstance(msg, Status):
        _check_status(msg)
    elif isinstance(msg, Ack):
        _check_ack(msg)
    elif isinstance(msg, Command):
        _check_command(msg)
    else:
        _fail(f"not a protocol message: {_kind(msg)}")


# -- encoding ------------------------------------------------------------------------------


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


# -- decoding ------------------------------------------------------------------------------


def _reject_tag(decoder: object, tag: object = None) -> NoReturn:
    # No message uses tags; cbor2's built-in ones (dates, bignums, regexes, MIME,
    # shared references) would only widen what hostile bytes can reach.
    raise ValueError("CBOR tags are not used by this protocol")


_BUILTIN_TAGS: Final = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258)
_SEMANTIC_REJECT: Final[dict[int, Callable[..., Any]]] = dict.fromkeys(
    (*_BUILTIN_TAGS, 260, 261, 1004, 1040, 55799), _reject_tag
)


class _Fields:
    """Typed access to a decoded map, naming the field and its key in every error."""

    __slots__ = ("_json", "_m", "_name")

    def __init__(self, m: dict[int, Any], name: str, *, json: bool) -> None:
        self._m = m
        self._name = name
        self._json = json

    def label(self, key: Key) -> str:
        field = _FIELD_NAMES[key]
        if self._json:
            return f"{self._name}.{field}"
        return f"{self._name}.{field} (key {int(key)})"

    def get(self, key: Key) -> Any:
        try:
            return self._m[key]
        except KeyError:
            _fail(f"{self.label(key)}: missing")

    def optional(self, key: Key) -> Any:
        return self._m.get(key)

    def uint(self, key: Key, lo: int, hi: int) -> int:
        value = self.get(key)
        _check_int(value, self.label(key), lo, hi)
        return int(value)

    def opt_int(self, key: Key, lo: int, hi: int) -> int | None:
        value = self._m.get(key)
        if value is None:
            return None
        _check_int(value, self.label(key), lo, hi)
        return int(value)

    def text(self, key: Key) -> str:
        value = self.get(key)
        if not isinstance(value, str):
            _fail(f"{self.label(key)}: expected text, got {_kind(value)}")
        return value

    def number(self, key: Key) -> float:
        value = self.get(key)
        _check_number(value, self.label(key))
        return float(value)

    def bytes(self, key: Key) -> bytes:
        value = self.get(key)
        if not isinstance(value, bytes):
            _fail(f"{self.label(key)}: expected bytes, got {_kind(value)}")
        return value

    def array(self, key: Key) -> list[Any]:
        value = self.get(key)
        if not isinstance(value, list):
            _fail(f"{self.label(key)}: expected an array, got {_kind(value)}")
        return value

    def time_base(self) -> TimeBase:
        value = self.uint(Key.TIME_BASE, 0, max(TimeBase))
        return TimeBase(value)


_FIELD_NAMES: Final[dict[Key, str]] = {k: k.name.lower() for k in Key}
_FIELD_NAMES[Key.VERSION] = "v"
_FIELD_NAMES[Key.TYPE] = "type"
_FIELD_NAMES[Key.KIND] = "kind"


def _samples_from(raw_samples: list[Any], n_channels: int, label: str) -> tuple[Sample, ...]:
    if not 0 < len(raw_samples) <= MAX_SAMPLES:
        _fail(f"{label}: {len(raw_samples)} samples, expected 1..{MAX_SAMPLES}")
    out = []
    for i, item in enumerate(raw_samples):
        if type(item) is not list or len(item) != 2:
            _fail(f"{label}[{i}]: expected [t, [values...]], got {_show(item)}")
        t, values = item
        if type(t) is not int or not 0 <= t <= TIME_MAX:
            _check_int(t, f"{label}[{i}].t", 0, TIME_MAX)
        if type(values) is not list:
            _fail(f"{label}[{i}].values: expected an array, got {_kind(values)}")
        if len(values) != n_channels:
            _fail(f"{label}[{i}].values: {len(values)} values for {n_channels} channels")
        for j, value in enumerate(values):
            if type(value) is not float or value - value != 0.0:
                _check_number(value, f"{label}[{i}].values[{j}]")
                values[j] = float(value)
        out.append(Sample(t, tuple(values)))
    return tuple(out)


# A node sends the same channel list in every batch: validating it once per distinct list
# (bounded, cleared when full) takes most of the per-message cost off single-reading messages.
_CHANNEL_CACHE: dict[tuple[tuple[str, str], ...], tuple[Channel, ...]] = {}
_CHANNEL_CACHE_MAX: Final = 1024
# The most recent (decoded channel list, channels) pair from the cache.
_LAST_CHANNELS: list[Any] = [None, ()]


def _channels_from(raw_channels: list[Any], label: str) -> tuple[Channel, ...]:
    if not 0 < len(raw_channels) <= MAX_CHANNELS:
        _fail(f"{label}: {len(raw_channels)} channels, expected 1..{MAX_CHANNELS}")
    out = []
    for i, item in enumerate(raw_channels):
        if type(item) is not list or len(item) != 2:
            _fail(f"{label}[{i}]: expected [name, unit], got {_show(item)}")
        out.append(Channel(item[0], item[1]))
    return tuple(out)


def _channel_key(raw_channels: list[Any]) -> tuple[tuple[str, str], ...] | None:
    """The cache key of a decoded channel list; None when it is not hashable pairs."""
    try:
        key = tuple((name, unit) for name, unit in raw_channels)
        hash(key)
    except (TypeError, ValueError):  # not pairs, or unhashable parts: the slow path says why
        return None
    return key


def _validated_channels(raw_channels: list[Any], label: str) -> tuple[Channel, ...]:
    """``_channels_from`` plus the channel checks, memoised per distinct channel list."""
    key = _channel_key(raw_channels)
    cached = None if key is None else _CHANNEL_CACHE.get(key)
    if cached is not None:
        return cached
    channels = _channels_from(raw_channels, label)
    _check_channels(channels)
    if key is not None:
        if len(_CHANNEL_CACHE) >= _CHANNEL_CACHE_MAX:
            _CHANNEL_CACHE.clear()
        _CHANNEL_CACHE[key] = channels
    return channels


def _slots_from(raw_slots: list[Any], label: str) -> tuple[SlotInfo, ...]:
    if len(raw_slots) > MAX_SLOTS:
        _fail(f"{label}: {len(raw_slots)} slots, more than the {MAX_SLOTS} allowed")
    out = []
    for i, item in enumerate(raw_slots):
        if type(item) is not list or len(item) != 7:
            _fail(
                f"{label}[{i}]: expected [slot, model_id, model_version, model_hash, "
                f"sequence, active, confirmed], got {_show(item)}"
            )
        out.append(SlotInfo(*item))
    return tuple(out)


def _args_from(raw_args: list[Any], label: str) -> tuple[tuple[str, Any], ...]:
    if len(raw_args) > MAX_ARGS:
        _fail(f"{label}: {len(raw_args)} arguments, more than the {MAX_ARGS} allowed")
    out = []
    for i, item in enumerate(raw_args):
        if type(item) is not list or len(item) != 2:
            _fail(f"{label}[{i}]: expected [name, value], got {_show(item)}")
        out.append((item[0], item[1]))
    return tuple(out)


_TIME_BASES: Final = {int(tb): tb for tb in TimeBase}
# Node ids that passed validation; bounded like the channel cache.
_VALID_NODE_IDS: set[str] = set()


def _fast_reading_batch(obj: dict[Any, Any]) -> ReadingBatch | None:
    """The common case, a well-formed ReadingBatch, without building error labels.

    Returns None at the first thing out of the ordinary; the full path then decides and
    names the problem. Anything accepted here is accepted, identically, by the full path
    (tests/unit/codecs check both paths agree).
    """
    version, mtype = obj.get(0), obj.get(1)
    if type(version) is not int or version != PROTOCOL_VERSION or type(mtype) is not int:
        return None
    if mtype != MessageType.READINGS:
        return None
    for key in obj:
        if type(key) is not int:  # bool keys would alias int ones (True == 1)
            return None
    node_id = obj.get(2)
    boot_id = obj.get(3)
    seq = obj.get(4)
    raw_time_base = obj.get(5)
    time_base = _TIME_BASES.get(raw_time_base) if type(raw_time_base) is int else None
    raw_channels = obj.get(7)
    raw_samples = obj.get(8)
    if (
        type(node_id) is not str
        or type(boot_id) is not int
        or type(seq) is not int
        or time_base is None
        or type(raw_channels) is not list
        or type(raw_samples) is not list
        or not 0 <= boot_id <= U32_MAX
        or not 0 < len(raw_samples) <= MAX_SAMPLES
        or not 1 <= seq <= U32_MAX - len(raw_samples) + 1
    ):
        return None
    if node_id not in _VALID_NODE_IDS:
        if not is_valid_node_id(node_id):
            return None
        if len(_VALID_NODE_IDS) >= _CHANNEL_CACHE_MAX:
            _VALID_NODE_IDS.clear()
        _VALID_NODE_IDS.add(node_id)
    last_raw, channels = _LAST_CHANNELS
    # A stream of batches repeats one channel list. Equal to a list that passed validation
    # means valid: list equality needs lists all the way down, and a str equals only a str.
    if raw_channels != last_raw:
        key = _channel_key(raw_channels)
        cached = None if key is None else _CHANNEL_CACHE.get(key)
        if cached is None:
            return None
        channels = cached
        _LAST_CHANNELS[:] = (raw_channels, channels)
    n_channels = len(channels)
    samples = []
    for item in raw_samples:
        if type(item) is not list or len(item) != 2:
            return None
        t, values = item
        if type(t) is not int or not 0 <= t <= TIME_MAX or type(values) is not list:
            return None
        if len(values) != n_channels:
            return None
        for value in values:
            if type(value) is not float or value - value != 0.0:
                return None
        samples.append(Sample(t, tuple(values)))
    return ReadingBatch(node_id, boot_id, seq, time_base, channels, tuple(samples))


def message_from_map(obj: object, *, json: bool = False) -> Message:
    """Build and validate a message from a decoded map (CBOR keys, CBOR value types).

    Raises :class:`PayloadError` without ``raw``; :func:`decode_message` adds it.
    """
    if isinstance(obj, dict):
        fast = _fast_reading_batch(obj)
        if fast is not None:
            return fast
    return _full_message_from_map(obj, json=json)


def _full_message_from_map(obj: object, *, json: bool) -> Message:
    """Every message type, every check, and an error that names the field and key."""
    if not isinstance(obj, dict):
        _fail(f"expected a map at the top level, got {_kind(obj)}")
    # Only integer keys carry meaning; bool/float keys must not alias them (True == 1).
    m = {k: v for k, v in obj.items() if type(k) is int}
    top = _Fields(m, "message", json=json)
    version = top.get(Key.VERSION)
    if type(version) is not int:
        _fail(f"{top.label(Key.VERSION)}: expected an integer, got {_kind(version)}")
    if version != PROTOCOL_VERSION:
        _fail(
            f"unsupported protocol version {version} (this gateway speaks {PROTOCOL_VERSION}); "
            "update the gateway or build the node for version 1"
        )
    mtype_raw = top.get(Key.TYPE)
    if type(mtype_raw) is not int or mtype_raw not in MessageType._value2member_map_:
        _fail(f"{top.label(Key.TYPE)}: unknown message type {_show(mtype_raw)}")
    mtype = MessageType(mtype_raw)
    msg: Message
    if mtype is MessageType.READINGS:
        f = _Fields(m, "ReadingBatch", json=json)
        channels = _validated_channels(f.array(Key.CHANNELS), f.label(Key.CHANNELS))
        samples = _samples_from(f.array(Key.SAMPLES), len(channels), f.label(Key.SAMPLES))
        batch = ReadingBatch(
            node_id=f.get(Key.NODE_ID),
            boot_id=f.get(Key.BOOT_ID),
            seq=f.get(Key.SEQ),
            time_base=f.time_base(),
            channels=channels,
            samples=samples,
        )
        _check_reading_batch(batch, samples_checked=True, channels_checked=True)
        return batch
    if mtype is MessageType.INFERENCE:
        f = _Fields(m, "NodeInference", json=json)
        msg = NodeInference(
            node_id=f.get(Key.NODE_ID),
            boot_id=f.get(Key.BOOT_ID),
            seq=f.get(Key.SEQ),
            time_base=f.time_base(),
            t=f.get(Key.T),
            model_id=f.get(Key.MODEL_ID),
            model_version=f.get(Key.MODEL_VERSION),
            model_hash=f.bytes(Key.MODEL_HASH),
            score=f.number(Key.SCORE),
            label=f.get(Key.LABEL),
            latency_us=f.get(Key.LATENCY_US),
        )
    elif mtype is MessageType.STATUS:
        f = _Fields(m, "Status", json=json)
        raw_slots = f.optional(Key.SLOTS)
        if raw_slots is None:
            raw_slots = []
        elif not isinstance(raw_slots, list):
            _fail(f"{f.label(Key.SLOTS)}: expected an array, got {_kind(raw_slots)}")
        msg = Status(
            node_id=f.get(Key.NODE_ID),
            boot_id=f.get(Key.BOOT_ID),
            seq=f.get(Key.SEQ),
            time_base=f.time_base(),
            t=f.get(Key.T),
            uptime_ms=f.get(Key.UPTIME_MS),
            battery_mv=f.opt_int(Key.BATTERY_MV, 0, U16_MAX),
            rssi_dbm=f.opt_int(Key.RSSI_DBM, -128, 127),
            free_ram_bytes=f.opt_int(Key.FREE_RAM_BYTES, 0, U32_MAX),
            firmware_version=f.get(Key.FIRMWARE_VERSION),
            oldest_unacked_seq=f.get(Key.OLDEST_UNACKED_SEQ),
            slots=_slots_from(raw_slots, f.label(Key.SLOTS)),
        )
    elif mtype is MessageType.ACK:
        f = _Fields(m, "Ack", json=json)
        msg = Ack(
            node_id=f.get(Key.NODE_ID), boot_id=f.get(Key.BOOT_ID), up_to_seq=f.get(Key.UP_TO_SEQ)
        )
    else:
        f = _Fields(m, "Command", json=json)
        kind = f.uint(Key.KIND, 0, U32_MAX)
        if kind not in CommandKind._value2member_map_:
            _fail(f"{f.label(Key.KIND)}: unknown command kind {kind}")
        raw_args = f.optional(Key.ARGS)
        if raw_args is None:
            raw_args = []
        elif not isinstance(raw_args, list):
            _fail(f"{f.label(Key.ARGS)}: expected an array, got {_kind(raw_args)}")
        msg = Command(
            node_id=f.get(Key.NODE_ID),
            cmd_id=f.get(Key.CMD_ID),
            kind=CommandKind(kind),
            args=_args_from(raw_args, f.label(Key.ARGS)),
        )
    validate_message(msg)
    return msg


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Decode one CBOR message, raising only :class:`PayloadError`.

    The input must be exactly one CBOR map (no trailing bytes, no tags, no duplicate
    keys, at most :data:`MAX_MESSAGE_BYTES`). For malformed CBOR the error's ``offset``
    is where decoding stopped; for a well-formed map with a bad field it is 0 and the
    reason names the field and its key.
    """
    raw = bytes(data)
    if not raw:
        raise PayloadError("empty payload: expected a CBOR map", raw, 0)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise PayloadError(
            f"message of {len(raw)} bytes is larger than the {MAX_MESSAGE_BYTES} allowed; "
            "send smaller batches",
            raw,
            MAX_MESSAGE_BYTES,
        )
    if not 0xA0 <= raw[0] <= 0xBF:
        raise PayloadError(
            f"expected a CBOR map (first byte 0xa0..0xbf), got 0x{raw[0]:02x}", raw, 0
        )
    fp = io.BytesIO(raw)
    try:
        obj = cbor2.CBORDecoder(
            fp,
            tag_hook=_reject_tag,
            semantic_decoders=_SEMANTIC_REJECT,
            max_depth=_MAX_DEPTH,
            allow_duplicate_keys=False,
        ).decode()
    # cbor2 reports malformed input as CBORDecodeError but hostile input can surface
    # ValueError/OverflowError/RecursionError from its internals; all mean "bad bytes".
    except Exception as exc:
        raise PayloadError(f"malformed CBOR: {exc}", raw, fp.tell()) from exc
    end = fp.tell()
    if end != len(raw):
        raise PayloadError(f"{len(raw) - end} unexpected bytes after the CBOR map", raw, end)
    try:
        return message_from_map(obj)
    except PayloadError as exc:
        raise PayloadError(exc.reason, raw, 0) from None
