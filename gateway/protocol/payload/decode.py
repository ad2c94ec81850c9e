"""Decoding: CBOR bytes (or a decoded map) to a validated message.

:func:`decode_message` raises only :class:`~gateway.errors.PayloadError`; anything else
escaping it is a bug. Well-formed ReadingBatches take the fast path
(:mod:`gateway.protocol.payload.fast`); everything else, and anything the fast path is
unsure of, takes the full path here, whose errors name the field and its key.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, Final, NoReturn

import cbor2

from gateway.errors import PayloadError
from gateway.protocol.messages import (
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
)
from gateway.protocol.payload.fast import (
    CHANNEL_CACHE,
    CHANNEL_CACHE_MAX,
    channel_key,
    fast_reading_batch,
)
from gateway.protocol.payload.schema import (
    FIELD_NAMES,
    MAX_ARGS,
    MAX_CHANNELS,
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    MAX_SAMPLES,
    MAX_SLOTS,
    TIME_MAX,
    U16_MAX,
    U32_MAX,
    Key,
    MessageType,
)
from gateway.protocol.payload.validate import (
    check_channels,
    check_int,
    check_number,
    check_reading_batch,
    fail,
    show,
    type_name,
    validate_message,
)


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
        field = FIELD_NAMES[key]
        if self._json:
            return f"{self._name}.{field}"
        return f"{self._name}.{field} (key {int(key)})"

    def get(self, key: Key) -> Any:
        try:
            return self._m[key]
        except KeyError:
            fail(f"{self.label(key)}: missing")

    def optional(self, key: Key) -> Any:
        return self._m.get(key)

    def uint(self, key: Key, lo: int, hi: int) -> int:
        value = self.get(key)
        check_int(value, self.label(key), lo, hi)
        return int(value)

    def opt_int(self, key: Key, lo: int, hi: int) -> int | None:
        value = self._m.get(key)
        if value is None:
            return None
        check_int(value, self.label(key), lo, hi)
        return int(value)

    def text(self, key: Key) -> str:
        value = self.get(key)
        if not isinstance(value, str):
            fail(f"{self.label(key)}: expected text, got {type_name(value)}")
        return value

    def number(self, key: Key) -> float:
        value = self.get(key)
        check_number(value, self.label(key))
        return float(value)

    def bytes(self, key: Key) -> bytes:
        value = self.get(key)
        if not isinstance(value, bytes):
            fail(f"{self.label(key)}: expected bytes, got {type_name(value)}")
        return value

    def array(self, key: Key) -> list[Any]:
        value = self.get(key)
        if not isinstance(value, list):
            fail(f"{self.label(key)}: expected an array, got {type_name(value)}")
        return value

    def time_base(self) -> TimeBase:
        value = self.uint(Key.TIME_BASE, 0, max(TimeBase))
        return TimeBase(value)


def _samples_from(raw_samples: list[Any], n_channels: int, label: str) -> tuple[Sample, ...]:
    if not 0 < len(raw_samples) <= MAX_SAMPLES:
        fail(f"{label}: {len(raw_samples)} samples, expected 1..{MAX_SAMPLES}")
    out = []
    for i, item in enumerate(raw_samples):
        if type(item) is not list or len(item) != 2:
            fail(f"{label}[{i}]: expected [t, [values...]], got {show(item)}")
        t, values = item
        if type(t) is not int or not 0 <= t <= TIME_MAX:
            check_int(t, f"{label}[{i}].t", 0, TIME_MAX)
        if type(values) is not list:
            fail(f"{label}[{i}].values: expected an array, got {type_name(values)}")
        if len(values) != n_channels:
            fail(f"{label}[{i}].values: {len(values)} values for {n_channels} channels")
        for j, value in enumerate(values):
            if type(value) is not float or value - value != 0.0:
                check_number(value, f"{label}[{i}].values[{j}]")
                values[j] = float(value)
        out.append(Sample(t, tuple(values)))
    return tuple(out)


def _channels_from(raw_channels: list[Any], label: str) -> tuple[Channel, ...]:
    if not 0 < len(raw_channels) <= MAX_CHANNELS:
        fail(f"{label}: {len(raw_channels)} channels, expected 1..{MAX_CHANNELS}")
    out = []
    for i, item in enumerate(raw_channels):
        if type(item) is not list or len(item) != 2:
            fail(f"{label}[{i}]: expected [name, unit], got {show(item)}")
        out.append(Channel(item[0], item[1]))
    return tuple(out)


def _validated_channels(raw_channels: list[Any], label: str) -> tuple[Channel, ...]:
    """``_channels_from`` plus the channel checks, memoised per distinct channel list."""
    key = channel_key(raw_channels)
    cached = None if key is None else CHANNEL_CACHE.get(key)
    if cached is not None:
        return cached
    channels = _channels_from(raw_channels, label)
    check_channels(channels)
    if key is not None:
        if len(CHANNEL_CACHE) >= CHANNEL_CACHE_MAX:
            CHANNEL_CACHE.clear()
        CHANNEL_CACHE[key] = channels
    return channels


def _slots_from(raw_slots: list[Any], label: str) -> tuple[SlotInfo, ...]:
    if len(raw_slots) > MAX_SLOTS:
        fail(f"{label}: {len(raw_slots)} slots, more than the {MAX_SLOTS} allowed")
    out = []
    for i, item in enumerate(raw_slots):
        if type(item) is not list or len(item) != 7:
            fail(
                f"{label}[{i}]: expected [slot, model_id, model_version, model_hash, "
                f"sequence, active, confirmed], got {show(item)}"
            )
        out.append(SlotInfo(*item))
    return tuple(out)


def _args_from(raw_args: list[Any], label: str) -> tuple[tuple[str, Any], ...]:
    if len(raw_args) > MAX_ARGS:
        fail(f"{label}: {len(raw_args)} arguments, more than the {MAX_ARGS} allowed")
    out = []
    for i, item in enumerate(raw_args):
        if type(item) is not list or len(item) != 2:
            fail(f"{label}[{i}]: expected [name, value], got {show(item)}")
        out.append((item[0], item[1]))
    return tuple(out)


def message_from_map(obj: object, *, json: bool = False) -> Message:
    """Build and validate a message from a decoded map (CBOR keys, CBOR value types).

    Raises :class:`PayloadError` without ``raw``; :func:`decode_message` adds it.
    """
    if isinstance(obj, dict):
        fast = fast_reading_batch(obj)
        if fast is not None:
            return fast
    return full_message_from_map(obj, json=json)


def full_message_from_map(obj: object, *, json: bool) -> Message:
    """Every message type, every check, and an error that names the field and key."""
    if not isinstance(obj, dict):
        fail(f"expected a map at the top level, got {type_name(obj)}")
    # Only integer keys carry meaning; bool/float keys must not alias them (True == 1).
    m = {k: v for k, v in obj.items() if type(k) is int}
    top = _Fields(m, "message", json=json)
    version = top.get(Key.VERSION)
    if type(version) is not int:
        fail(f"{top.label(Key.VERSION)}: expected an integer, got {type_name(version)}")
    if version != PROTOCOL_VERSION:
        fail(
            f"unsupported protocol version {version} (this gateway speaks {PROTOCOL_VERSION}); "
            "update the gateway or build the node for version 1"
        )
    mtype_raw = top.get(Key.TYPE)
    if type(mtype_raw) is not int or mtype_raw not in _BUILDERS:
        fail(f"{top.label(Key.TYPE)}: unknown message type {show(mtype_raw)}")
    name, build = _BUILDERS[mtype_raw]
    msg = build(_Fields(m, name, json=json))
    if not isinstance(msg, ReadingBatch):  # a batch's builder has checked it already
        validate_message(msg)
    return msg


def _reading_batch_from(f: _Fields) -> Message:
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
    check_reading_batch(batch, samples_checked=True, channels_checked=True)
    return batch


def _inference_from(f: _Fields) -> Message:
    return NodeInference(
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


def _status_from(f: _Fields) -> Message:
    raw_slots = f.optional(Key.SLOTS)
    if raw_slots is None:
        raw_slots = []
    elif not isinstance(raw_slots, list):
        fail(f"{f.label(Key.SLOTS)}: expected an array, got {type_name(raw_slots)}")
    return Status(
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


def _ack_from(f: _Fields) -> Message:
    return Ack(
        node_id=f.get(Key.NODE_ID), boot_id=f.get(Key.BOOT_ID), up_to_seq=f.get(Key.UP_TO_SEQ)
    )


def _command_from(f: _Fields) -> Message:
    kind = f.uint(Key.KIND, 0, U32_MAX)
    if kind not in _COMMAND_KINDS:
        fail(f"{f.label(Key.KIND)}: unknown command kind {kind}")
    raw_args = f.optional(Key.ARGS)
    if raw_args is None:
        raw_args = []
    elif not isinstance(raw_args, list):
        fail(f"{f.label(Key.ARGS)}: expected an array, got {type_name(raw_args)}")
    return Command(
        node_id=f.get(Key.NODE_ID),
        cmd_id=f.get(Key.CMD_ID),
        kind=_COMMAND_KINDS[kind],
        args=_args_from(raw_args, f.label(Key.ARGS)),
    )


# Message type -> (name in errors, builder).
_BUILDERS: Final[dict[int, tuple[str, Callable[[_Fields], Message]]]] = {
    MessageType.READINGS: ("ReadingBatch", _reading_batch_from),
    MessageType.INFERENCE: ("NodeInference", _inference_from),
    MessageType.STATUS: ("Status", _status_from),
    MessageType.ACK: ("Ack", _ack_from),
    MessageType.COMMAND: ("Command", _command_from),
}
_COMMAND_KINDS: Final = {int(k): k for k in CommandKind}


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
            max_depth=MAX_DEPTH,
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
