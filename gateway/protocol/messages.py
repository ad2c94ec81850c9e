"""The typed messages that travel between sensor nodes and the gateway.

These are plain frozen dataclasses (and one named tuple, :class:`Sample`) with no I/O:
codecs turn bytes into them, adapters stamp them with a receive time, the journal stores
them. Every uplink message carries its identity ``(node_id, boot_id, seq)`` (invariant
"Identity of data").

Sequence numbers: one counter per ``(node_id, boot_id)``, starting at 1, shared
by every uplink data message. A :class:`ReadingBatch` of ``k`` samples occupies
the ``k`` consecutive numbers ``seq .. seq + k - 1``; every other uplink message
occupies one. An :class:`Ack` of ``N`` tells the node that every message of that
boot with ``seq <= N`` is durable on the gateway.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

PROTOCOL_VERSION = 1

# Node ids are short printable names ("pump-07"); they appear in MQTT topics,
# file names and log lines, so the alphabet is deliberately small.
NODE_ID_MAX_LEN = 32
NODE_ID_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def is_valid_node_id(node_id: str) -> bool:
    """True when ``node_id`` is 1..32 characters of ``[A-Za-z0-9._-]``."""
    return 0 < len(node_id) <= NODE_ID_MAX_LEN and all(c in NODE_ID_ALPHABET for c in node_id)


class TimeBase(enum.IntEnum):
    """What a node's timestamps count."""

    UPTIME_MS = 0  # milliseconds since this boot; the gateway maps it to wall time
    UNIX_MS = 1  # milliseconds since 1970-01-01 UTC from a node that has a clock


class Transport(enum.StrEnum):
    SERIAL = "serial"
    BLE = "ble"
    MQTT = "mqtt"


@dataclass(frozen=True, slots=True)
class Channel:
    """A sensor channel: a name the fleet agrees on and its SI-ish unit."""

    name: str  # e.g. "current", "pressure", "vib_rms"
    unit: str  # e.g. "A", "bar", "m/s2", "degC"


class Sample(NamedTuple):
    """One reading: a timestamp and one value per channel of its batch.

    A named tuple rather than a frozen dataclass: a batch carries up to hundreds of them
    and a frozen dataclass takes about three times as long to build (each field goes
    through ``object.__setattr__``).
    """

    t: int  # in the batch's time base
    values: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    node_id: str
    boot_id: int
    seq: int  # seq of samples[0]; samples[i] has seq + i
    time_base: TimeBase
    channels: tuple[Channel, ...]
    samples: tuple[Sample, ...]

    @property
    def last_seq(self) -> int:
        return self.seq + len(self.samples) - 1


@dataclass(frozen=True, slots=True)
class NodeInference:
    """The result of the node's own on-device model over a window of readings."""

    node_id: str
    boot_id: int
    seq: int
    time_base: TimeBase
    t: int
    model_id: str
    model_version: str  # semantic version, "1.4.0"
    model_hash: bytes  # first 8 bytes of the artifact's sha256
    score: float  # anomaly score, higher is more anomalous
    label: int  # 0 normal, >0 model-specific class
    latency_us: int

    @property
    def last_seq(self) -> int:
        return self.seq


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """One of the node's two model slots (A/B)."""

    slot: int  # 0 = A, 1 = B
    model_id: str
    model_version: str
    model_hash: bytes  # first 8 bytes of sha256
    sequence: int  # the manifest's monotonic sequence number
    active: bool
    confirmed: bool


@dataclass(frozen=True, slots=True)
class Status:
    """Heartbeat: health of the node and where its unacknowledged data starts."""

    node_id: str
    boot_id: int
    seq: int
    time_base: TimeBase
    t: int
    uptime_ms: int
    battery_mv: int | None
    rssi_dbm: int | None
    free_ram_bytes: int | None
    firmware_version: str
    # Lowest seq the node still holds unacknowledged (0 if none). When the node's
    # buffer overflowed, seqs below this are gone for good: the gateway counts them
    # as a gap instead of waiting for them.
    oldest_unacked_seq: int
    slots: tuple[SlotInfo, ...] = field(default=())

    @property
    def last_seq(self) -> int:
        return self.seq


UplinkMessage = ReadingBatch | NodeInference | Status


@dataclass(frozen=True, slots=True)
class Ack:
    """Gateway → node: every message of ``boot_id`` with ``seq <= up_to_seq`` is durable."""

    node_id: str
    boot_id: int
    up_to_seq: int


class CommandKind(enum.IntEnum):
    SET_THRESHOLD = 0  # args: {"threshold": float}
    ACTUATE = 1  # args: {"output": str, "state": bool}
    REQUEST_INFO = 2  # args: {}; the node answers with a Status
    REBOOT = 3  # args: {}


@dataclass(frozen=True, slots=True)
class Command:
    """Gateway → node instruction. ``cmd_id`` lets the node ignore a repeat."""

    node_id: str
    cmd_id: int
    kind: CommandKind
    args: tuple[tuple[str, float | int | str | bool], ...] = ()


DownlinkMessage = Ack | Command
Message = UplinkMessage | DownlinkMessage
