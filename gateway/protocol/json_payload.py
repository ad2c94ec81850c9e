"""The JSON form of the messages, for hand-made nodes that have no CBOR library.

Same fields, limits and rules as the CBOR form (gateway.protocol.payload); names instead of
integer keys, the message type and command kind as lowercase names, hashes as hex. Only
MQTT carries it (docs/protocol.md, "JSON form"). Decoding raises only PayloadError.
"""

from __future__ import annotations

import json
from typing import Any, Final, NoReturn

from gateway.errors import PayloadError
from gateway.protocol.messages import CommandKind, Message, TimeBase
from gateway.protocol.payload import (
    FIELD_NAMES,
    MAX_MESSAGE_BYTES,
    Key,
    MessageType,
    message_from_map,
    message_to_map,
    validate_message,
)

# JSON spends more bytes on the same content than CBOR does.
MAX_JSON_BYTES: Final = 4 * MAX_MESSAGE_BYTES

TYPE_NAMES: Final[dict[MessageType, str]] = {
    MessageType.READINGS: "readings",
    MessageType.INFERENCE: "inference",
    MessageType.STATUS: "status",
    MessageType.ACK: "ack",
    MessageType.COMMAND: "cmd",
}
_TYPES_BY_NAME: Final = {name: mtype for mtype, name in TYPE_NAMES.items()}
_TIME_BASES: Final = {tb.name.lower(): tb for tb in TimeBase}
_KINDS: Final = {kind.name.lower(): kind for kind in CommandKind}
_KEYS_BY_NAME: Final = {name: key for key, name in FIELD_NAMES.items()}
_SLOT_FIELDS: Final = (
    "slot",
    "model_id",
    "model_version",
    "model_hash",
    "sequence",
    "active",
    "confirmed",
)


def _fail(reason: str) -> NoReturn:
    raise PayloadError(reason)


def _to_json_value(key: Key, value: Any) -> Any:
    if key is Key.TYPE:
        return TYPE_NAMES[MessageType(value)]
    if key is Key.TIME_BASE:
        return TimeBase(value).name.lower()
    if key is Key.KIND:
        return CommandKind(value).name.lower()
    if key is Key.MODEL_HASH:
        return value.hex()
    if key is Key.SAMPLES:
        return [[t, list(values)] for t, values in value]
    if key is Key.SLOTS:
        return [dict(zip(_SLOT_FIELDS, (*s[:3], s[3].hex(), *s[4:]), strict=True)) for s in value]
    if key is Key.ARGS:
        return dict(value)
    return value


def is_json_payload(payload: bytes | bytearray | memoryview) -> bool:
    """True when ``payload`` is in the JSON form: its first byte is ``{`` (a CBOR message
    starts with a map header, 0xa0-0xbf). Downlinks answer a node in its uplinks' form."""
    return payload[:1] == b"{"


def encode_json_message(msg: Message) -> bytes:
    """Validate ``msg`` and encode it as compact UTF-8 JSON (round-trips exactly)."""
    validate_message(msg)
    out: dict[str, Any] = {}
    for key, value in message_to_map(msg).items():
        k = Key(key)
        out[FIELD_NAMES[k]] = _to_json_value(k, value)
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _reject_constant(name: str) -> NoReturn:
    _fail(f"JSON: {name} is not allowed; send finite numbers only")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            _fail(f"JSON: key {name!r} appears twice in an object")
        out[name] = value
    return out


def _hex(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        _fail(f"{what}: expected a hex string, got {type(value).__name__}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        _fail(f"{what}: {value[:40]!r} is not a hex string")


def _name_to(table: dict[str, Any], value: object, what: str) -> Any:
    if not isinstance(value, str) or value not in table:
        _fail(f"{what}: {value!r:.40} is not one of {', '.join(sorted(table))}")
    return table[value]


def _slots_to_arrays(value: Any) -> Any:
    if not isinstance(value, list):
        return value  # the shared decoder reports the wrong type
    slots = []
    for i, slot in enumerate(value):
        what = f"status.slots[{i}]"
        if not isinstance(slot, dict):
            _fail(f"{what}: expected an object, got {type(slot).__name__}")
        missing = [f for f in _SLOT_FIELDS if f not in slot]
        if missing:
            _fail(f"{what}: missing {', '.join(missing)}")
        row = [slot[f] for f in _SLOT_FIELDS]
        row[3] = _hex(row[3], f"{what}.model_hash")
        slots.append(row)
    return slots


def _from_json_value(key: Key, value: Any, mtype_name: object) -> Any:
    if key is Key.TYPE:
        return int(_name_to(_TYPES_BY_NAME, value, "message.type"))
    if key is Key.TIME_BASE:
        return int(_name_to(_TIME_BASES, value, f"{mtype_name}.time_base"))
    if key is Key.KIND:
        return int(_name_to(_KINDS, value, "cmd.kind"))
    if key is Key.MODEL_HASH:
        return _hex(value, f"{mtype_name}.model_hash")
    if key is Key.SLOTS:
        return _slots_to_arrays(value)
    if key is Key.ARGS:
        if not isinstance(value, dict):
            _fail(f"cmd.args: expected an object, got {type(value).__name__}")
        return [[k, v] for k, v in value.items()]
    return value


def _to_cbor_map(obj: dict[str, Any]) -> dict[int, Any]:
    mtype_name = obj.get("type")
    # Unknown fields are ignored, as in CBOR.
    return {
        int(key): _from_json_value(key, value, mtype_name)
        for name, value in obj.items()
        if (key := _KEYS_BY_NAME.get(name)) is not None
    }


def decode_json_message(data: bytes | bytearray | memoryview) -> Message:
    """Decode the JSON form of a message, raising only :class:`PayloadError`."""
    raw = bytes(data)
    if len(raw) > MAX_JSON_BYTES:
        raise PayloadError(
            f"JSON message of {len(raw)} bytes is larger than the {MAX_JSON_BYTES} allowed",
            raw,
            MAX_JSON_BYTES,
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"JSON: invalid UTF-8 ({exc.reason})", raw, exc.start) from None
    try:
        obj = json.loads(text, object_pairs_hook=_pairs, parse_constant=_reject_constant)
    except PayloadError as exc:
        raise PayloadError(exc.reason, raw, 0) from None
    except json.JSONDecodeError as exc:
        offset = len(text[: exc.pos].encode("utf-8"))
        raise PayloadError(f"JSON: {exc.msg}", raw, offset) from None
    except RecursionError:
        raise PayloadError("JSON: nested too deeply", raw, 0) from None
    # Integers of thousands of digits hit Python's int-conversion limit.
    except ValueError as exc:
        raise PayloadError(f"JSON: {exc}", raw, 0) from None
    try:
        if not isinstance(obj, dict):
            _fail(f"JSON: expected an object at the top level, got {type(obj).__name__}")
        return message_from_map(_to_cbor_map(obj), json=True)
    except PayloadError as exc:
        raise PayloadError(exc.reason, raw, 0) from None
