"""Validation of message objects, shared by every encoder and decoder.

Every check raises :class:`~gateway.errors.PayloadError` naming the field; nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NoReturn

from gateway.errors import PayloadError
from gateway.protocol.messages import (
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
from gateway.protocol.payload.schema import (
    FLOAT_SAFE_INT,
    INT_ARG_MAX,
    INT_ARG_MIN,
    MAX_ARG_KEY_LEN,
    MAX_ARGS,
    MAX_CHANNEL_NAME_LEN,
    MAX_CHANNELS,
    MAX_SAMPLES,
    MAX_SLOT_NUMBER,
    MAX_SLOTS,
    MAX_TEXT_LEN,
    MAX_UNIT_LEN,
    MAX_VERSION_LEN,
    MODEL_HASH_LEN,
    NAME_ALPHABET,
    REQUIRED_ARGS,
    TIME_MAX,
    U16_MAX,
    U32_MAX,
)


def fail(reason: str) -> NoReturn:
    raise PayloadError(reason)


def show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def type_name(value: object) -> str:
    return type(value).__name__


def check_int(value: object, what: str, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f"{what}: expected an integer, got {type_name(value)}")
    if not lo <= value <= hi:
        fail(f"{what}: {value} is out of range {lo}..{hi}")


def check_number(value: object, what: str) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            fail(f"{what}: {value} is not a finite number (NaN and infinities are not sent)")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -FLOAT_SAFE_INT <= value <= FLOAT_SAFE_INT:
            fail(f"{what}: integer {value} does not convert exactly to a float")
    else:
        fail(f"{what}: expected a number, got {type_name(value)}")


def _check_text(value: object, what: str, max_len: int, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        fail(f"{what}: expected text, got {type_name(value)}")
    if not value and not allow_empty:
        fail(f"{what}: must not be empty")
    if len(value) > max_len:
        fail(f"{what}: {len(value)} characters, more than the {max_len} allowed")
    if not value.isprintable():
        fail(f"{what}: {show(value)} contains a control or non-printable character")


def _check_name(value: object, what: str, max_len: int) -> None:
    if not isinstance(value, str):
        fail(f"{what}: expected text, got {type_name(value)}")
    if not 0 < len(value) <= max_len or not NAME_ALPHABET.issuperset(value):
        fail(f"{what}: {show(value)} is not 1..{max_len} characters of [A-Za-z0-9._-]")


def _check_node_id(value: object, what: str) -> None:
    if not isinstance(value, str) or not is_valid_node_id(value):
        fail(f"{what}: {show(value)} is not 1..32 characters of [A-Za-z0-9._-]")


def _check_hash(value: object, what: str) -> None:
    if not isinstance(value, bytes):
        fail(f"{what}: expected bytes, got {type_name(value)}")
    if len(value) != MODEL_HASH_LEN:
        fail(f"{what}: {len(value)} bytes, expected {MODEL_HASH_LEN}")


def _check_time_base(value: object, what: str) -> None:
    if not isinstance(value, TimeBase):
        fail(f"{what}: expected a TimeBase, got {show(value)}")


def _check_uplink_identity(msg: ReadingBatch | NodeInference | Status, name: str) -> None:
    _check_node_id(msg.node_id, f"{name}.node_id")
    check_int(msg.boot_id, f"{name}.boot_id", 0, U32_MAX)
    check_int(msg.seq, f"{name}.seq", 1, U32_MAX)
    _check_time_base(msg.time_base, f"{name}.time_base")


def _check_samples(samples: Iterable[Sample], n_channels: int) -> None:
    for i, sample in enumerate(samples):
        if not isinstance(sample, Sample):
            fail(f"ReadingBatch.samples[{i}]: expected a Sample, got {type_name(sample)}")
        t = sample.t
        if type(t) is not int or not 0 <= t <= TIME_MAX:
            check_int(t, f"ReadingBatch.samples[{i}].t", 0, TIME_MAX)
        values = sample.values
        if not isinstance(values, tuple):
            fail(f"ReadingBatch.samples[{i}].values: expected a tuple, got {type_name(values)}")
        if len(values) != n_channels:
            fail(
                f"ReadingBatch.samples[{i}].values: {len(values)} values for {n_channels} channels"
            )
        for j, value in enumerate(values):
            # Fast path: a finite float; x - x is NaN exactly when x is NaN or infinite.
            if type(value) is not float or value - value != 0.0:
                check_number(value, f"ReadingBatch.samples[{i}].values[{j}]")


def check_reading_batch(
    msg: ReadingBatch, *, samples_checked: bool = False, channels_checked: bool = False
) -> None:
    _check_uplink_identity(msg, "ReadingBatch")
    if not channels_checked:
        check_channels(msg.channels)
    samples = msg.samples
    if not isinstance(samples, tuple):
        fail(f"ReadingBatch.samples: expected a tuple, got {type_name(samples)}")
    if not 0 < len(samples) <= MAX_SAMPLES:
        fail(f"ReadingBatch.samples: {len(samples)} samples, expected 1..{MAX_SAMPLES}")
    if msg.last_seq > U32_MAX:
        fail(
            f"ReadingBatch.seq: {len(samples)} samples from seq {msg.seq} run past "
            f"{U32_MAX}; start a new boot_id before the counter wraps"
        )
    if not samples_checked:
        _check_samples(samples, len(msg.channels))


def check_channels(channels: object) -> None:
    if not isinstance(channels, tuple):
        fail(f"ReadingBatch.channels: expected a tuple, got {type_name(channels)}")
    if not 0 < len(channels) <= MAX_CHANNELS:
        fail(f"ReadingBatch.channels: {len(channels)} channels, expected 1..{MAX_CHANNELS}")
    seen: set[str] = set()
    for i, channel in enumerate(channels):
        if not isinstance(channel, Channel):
            fail(f"ReadingBatch.channels[{i}]: expected a Channel, got {type_name(channel)}")
        _check_name(channel.name, f"ReadingBatch.channels[{i}].name", MAX_CHANNEL_NAME_LEN)
        _check_text(
            channel.unit, f"ReadingBatch.channels[{i}].unit", MAX_UNIT_LEN, allow_empty=True
        )
        if channel.name in seen:
            fail(f"ReadingBatch.channels[{i}].name: {channel.name!r} appears twice")
        seen.add(channel.name)


def _check_inference(msg: NodeInference) -> None:
    _check_uplink_identity(msg, "NodeInference")
    check_int(msg.t, "NodeInference.t", 0, TIME_MAX)
    _check_text(msg.model_id, "NodeInference.model_id", MAX_TEXT_LEN)
    _check_text(msg.model_version, "NodeInference.model_version", MAX_VERSION_LEN)
    _check_hash(msg.model_hash, "NodeInference.model_hash")
    check_number(msg.score, "NodeInference.score")
    check_int(msg.label, "NodeInference.label", 0, U16_MAX)
    check_int(msg.latency_us, "NodeInference.latency_us", 0, U32_MAX)


def _check_slot(slot: object, what: str) -> None:
    if not isinstance(slot, SlotInfo):
        fail(f"{what}: expected a SlotInfo, got {type_name(slot)}")
    check_int(slot.slot, f"{what}.slot", 0, MAX_SLOT_NUMBER)
    _check_text(slot.model_id, f"{what}.model_id", MAX_TEXT_LEN)
    _check_text(slot.model_version, f"{what}.model_version", MAX_VERSION_LEN)
    _check_hash(slot.model_hash, f"{what}.model_hash")
    check_int(slot.sequence, f"{what}.sequence", 0, U32_MAX)
    for name in ("active", "confirmed"):
        if not isinstance(getattr(slot, name), bool):
            fail(f"{what}.{name}: expected a bool, got {type_name(getattr(slot, name))}")


def _check_status(msg: Status) -> None:
    _check_uplink_identity(msg, "Status")
    check_int(msg.t, "Status.t", 0, TIME_MAX)
    check_int(msg.uptime_ms, "Status.uptime_ms", 0, TIME_MAX)
    if msg.battery_mv is not None:
        check_int(msg.battery_mv, "Status.battery_mv", 0, U16_MAX)
    if msg.rssi_dbm is not None:
        check_int(msg.rssi_dbm, "Status.rssi_dbm", -128, 127)
    if msg.free_ram_bytes is not None:
        check_int(msg.free_ram_bytes, "Status.free_ram_bytes", 0, U32_MAX)
    _check_text(msg.firmware_version, "Status.firmware_version", MAX_TEXT_LEN)
    check_int(msg.oldest_unacked_seq, "Status.oldest_unacked_seq", 0, U32_MAX)
    if not isinstance(msg.slots, tuple):
        fail(f"Status.slots: expected a tuple, got {type_name(msg.slots)}")
    if len(msg.slots) > MAX_SLOTS:
        fail(f"Status.slots: {len(msg.slots)} slots, more than the {MAX_SLOTS} allowed")
    numbers: set[int] = set()
    for i, slot in enumerate(msg.slots):
        _check_slot(slot, f"Status.slots[{i}]")
        if slot.slot in numbers:
            fail(f"Status.slots[{i}].slot: slot {slot.slot} appears twice")
        numbers.add(slot.slot)


def _check_ack(msg: Ack) -> None:
    _check_node_id(msg.node_id, "Ack.node_id")
    check_int(msg.boot_id, "Ack.boot_id", 0, U32_MAX)
    check_int(msg.up_to_seq, "Ack.up_to_seq", 0, U32_MAX)


def _check_arg_value(value: object, what: str) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        check_int(value, what, INT_ARG_MIN, INT_ARG_MAX)
    elif isinstance(value, float):
        check_number(value, what)
    elif isinstance(value, str):
        _check_text(value, what, MAX_TEXT_LEN, allow_empty=True)
    else:
        fail(f"{what}: expected a number, text or bool, got {type_name(value)}")


def _check_command(msg: Command) -> None:
    _check_node_id(msg.node_id, "Command.node_id")
    check_int(msg.cmd_id, "Command.cmd_id", 0, U32_MAX)
    if not isinstance(msg.kind, CommandKind):
        fail(f"Command.kind: expected a CommandKind, got {show(msg.kind)}")
    if not isinstance(msg.args, tuple):
        fail(f"Command.args: expected a tuple of (name, value) pairs, got {type_name(msg.args)}")
    if len(msg.args) > MAX_ARGS:
        fail(f"Command.args: {len(msg.args)} arguments, more than the {MAX_ARGS} allowed")
    args: dict[str, object] = {}
    for i, pair in enumerate(msg.args):
        if not isinstance(pair, tuple) or len(pair) != 2:
            fail(f"Command.args[{i}]: expected a (name, value) pair, got {show(pair)}")
        name, value = pair
        _check_name(name, f"Command.args[{i}].name", MAX_ARG_KEY_LEN)
        if name in args:
            fail(f"Command.args[{i}].name: {name!r} appears twice")
        _check_arg_value(value, f"Command.args[{i}].value")
        args[name] = value
    for name, want in REQUIRED_ARGS[msg.kind]:
        if name not in args:
            fail(f"Command.args: {msg.kind.name} needs argument {name!r}")
        given = args[name]
        ok = {
            "number": isinstance(given, int | float) and not isinstance(given, bool),
            "text": isinstance(given, str),
            "bool": isinstance(given, bool),
        }[want]
        if not ok:
            fail(
                f"Command.args: {msg.kind.name} argument {name!r} must be {want}, got {type_name(given)}"
            )


def validate_message(msg: Message) -> None:
    """Raise :class:`PayloadError` unless ``msg`` is a message the protocol can carry.

    The reason names the field (``"ReadingBatch.samples[3].values: 2 values for 3
    channels"``). Encoders call this; decoders call it on what they built.
    """
    if isinstance(msg, ReadingBatch):
        check_reading_batch(msg)
    elif isinstance(msg, NodeInference):
        _check_inference(msg)
    elif isinstance(msg, Status):
        _check_status(msg)
    elif isinstance(msg, Ack):
        _check_ack(msg)
    elif isinstance(msg, Command):
        _check_command(msg)
    else:
        fail(f"not a protocol message: {type_name(msg)}")
