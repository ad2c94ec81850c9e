"""BLE advertisements of beacon-only nodes, and the standard ESS characteristic values.

A beacon has no connection and no acks: it puts its latest reading in the
manufacturer-specific data of a legacy (31-byte) advertisement under
:data:`~gateway.protocol.ble_layout.ADV_COMPANY_ID`, and its node id in the local name.
Layout (docs/protocol.md, "Beacon advertisements"), all little-endian::

    0  u8    bits 7..5 version (1), bits 4..3 reserved (0), bits 2..0 channel count n (1..4)
    1  u16   boot_id (a persisted counter; see below)
    3  u16   seq, 1..65535
    5  u24   seconds since the boot began
    8  n x { u8 channel type, s16 value in the type's resolution; -32768 = not available }

Bytes after the channels are ignored (room for later versions). A beacon starts a new
boot_id when seq or the seconds counter would wrap, so ``(node, boot_id, seq)`` stays
unique; it advertises each reading repeatedly and the journal keeps it once.

Sans-IO; decoders raise only :class:`~gateway.errors.PayloadError`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NoReturn

from gateway.errors import PayloadError
from gateway.protocol.ble_layout import ADV_COMPANY_ID
from gateway.protocol.messages import Channel, ReadingBatch, Sample, TimeBase, is_valid_node_id

ADV_VERSION: Final = 1
ADV_HEADER_LEN: Final = 8
ADV_CHANNEL_LEN: Final = 3
ADV_MAX_CHANNELS: Final = 4
ADV_NOT_AVAILABLE: Final = -32768
ADV_MAX_SEQ: Final = 0xFFFF
ADV_MAX_BOOT_ID: Final = 0xFFFF
ADV_MAX_UPTIME_S: Final = 0xFF_FFFF
LEGACY_ADV_MAX: Final = 31

# AD types (Bluetooth Core Supplement, part A).
AD_FLAGS: Final = 0x01
AD_COMPLETE_LOCAL_NAME: Final = 0x09
AD_MANUFACTURER_DATA: Final = 0xFF
# LE General Discoverable, BR/EDR not supported.
DEFAULT_AD_FLAGS: Final = 0x06

_HEADER: Final = struct.Struct("<BHH")
_CHANNEL: Final = struct.Struct("<Bh")


@dataclass(frozen=True, slots=True)
class AdvChannelType:
    code: int
    name: str
    unit: str
    divisor: int  # value = raw / divisor

    @property
    def channel(self) -> Channel:
        return Channel(self.name, self.unit)


ADV_CHANNEL_TYPES: Final[dict[int, AdvChannelType]] = {
    t.code: t
    for t in (
        AdvChannelType(0x01, "temperature", "degC", 100),
        AdvChannelType(0x02, "humidity", "%", 100),
        AdvChannelType(0x03, "pressure", "hPa", 10),
        AdvChannelType(0x04, "voltage", "V", 1000),
        AdvChannelType(0x05, "current", "A", 100),
        AdvChannelType(0x06, "vib_rms", "m/s2", 100),
        AdvChannelType(0x07, "co2", "ppm", 1),
        AdvChannelType(0x08, "moisture", "%", 100),
        AdvChannelType(0x09, "level", "m", 1000),
        AdvChannelType(0x0A, "flow", "L/min", 100),
        AdvChannelType(0x0B, "illuminance", "lx", 1),
        AdvChannelType(0x0C, "count", "", 1),
    )
}
_TYPES_BY_NAME: Final = {t.name: t for t in ADV_CHANNEL_TYPES.values()}


def _fail(reason: str, raw: bytes = b"", offset: int = 0) -> NoReturn:
    raise PayloadError(reason, raw, offset)


def adv_raw_value(channel_name: str, value: float) -> int:
    """The int16 a beacon sends for ``value`` of ``channel_name`` (rounded to resolution)."""
    ctype = _TYPES_BY_NAME.get(channel_name)
    if ctype is None:
        _fail(f"no beacon channel type named {channel_name!r}; known: {', '.join(_TYPES_BY_NAME)}")
    if not math.isfinite(value):
        _fail(f"beacon channel {channel_name!r}: {value} is not a finite number")
    raw = round(value * ctype.divisor)
    if not ADV_NOT_AVAILABLE < raw <= 32767:
        _fail(
            f"beacon channel {channel_name!r}: {value} {ctype.unit} is outside the int16 "
            f"range at resolution 1/{ctype.divisor}"
        )
    return raw


def encode_adv(
    *,
    boot_id: int,
    seq: int,
    uptime_s: int,
    values: Sequence[tuple[str, float | None]],
) -> bytes:
    """Manufacturer data (after the company id) for one beacon reading.

    ``values`` are ``(channel type name, value)`` pairs; ``None`` sends "not available".
    Raises :class:`PayloadError` for out-of-range fields or unknown channel names.
    """
    if not 0 <= boot_id <= ADV_MAX_BOOT_ID:
        _fail(f"beacon boot_id {boot_id} is out of range 0..{ADV_MAX_BOOT_ID}")
    if not 1 <= seq <= ADV_MAX_SEQ:
        _fail(f"beacon seq {seq} is out of range 1..{ADV_MAX_SEQ}; start a new boot_id")
    if not 0 <= uptime_s <= ADV_MAX_UPTIME_S:
        _fail(f"beacon uptime_s {uptime_s} is out of range 0..{ADV_MAX_UPTIME_S}")
    if not 1 <= len(values) <= ADV_MAX_CHANNELS:
        _fail(f"a beacon sends 1..{ADV_MAX_CHANNELS} channels, got {len(values)}")
    names = [name for name, _ in values]
    if len(set(names)) != len(names):
        _fail(f"beacon channels repeat a name: {names}")
    out = bytearray(_HEADER.pack((ADV_VERSION << 5) | len(values), boot_id, seq))
    out += uptime_s.to_bytes(3, "little")
    for name, value in values:
        raw = ADV_NOT_AVAILABLE
        if value is not None:
            raw = adv_raw_value(name, value)
        elif name not in _TYPES_BY_NAME:
            adv_raw_value(name, 0.0)  # reports the unknown name
        out += _CHANNEL.pack(_TYPES_BY_NAME[name].code, raw)
    return bytes(out)


def decode_adv(manufacturer_data: bytes, local_name: str) -> ReadingBatch:
    """Decode a beacon advert into a one-sample :class:`ReadingBatch`.

    ``manufacturer_data`` is the value under :data:`ADV_COMPANY_ID` (company id already
    stripped, as bleak's ``AdvertisementData.manufacturer_data`` gives it). Unknown
    channel types and "not available" values are left out; the batch's time base is
    ``UPTIME_MS``. Raises only :class:`PayloadError`.
    """
    raw = bytes(manufacturer_data)
    if not isinstance(local_name, str) or not is_valid_node_id(local_name):
        _fail(
            f"local name {local_name!r:.50} is not a node id (1..32 characters of [A-Za-z0-9._-])",
            raw,
            0,
        )
    if len(raw) < ADV_HEADER_LEN:
        _fail(
            f"beacon data of {len(raw)} bytes is shorter than the {ADV_HEADER_LEN}-byte header",
            raw,
            len(raw),
        )
    head, boot_id, seq = _HEADER.unpack_from(raw)
    version = head >> 5
    if version != ADV_VERSION:
        _fail(
            f"unsupported beacon format version {version} (this gateway reads {ADV_VERSION})",
            raw,
            0,
        )
    n = head & 0x07
    if not 1 <= n <= ADV_MAX_CHANNELS:
        _fail(f"beacon channel count {n} is out of range 1..{ADV_MAX_CHANNELS}", raw, 0)
    if seq == 0:
        _fail("beacon seq 0 is invalid (seqs start at 1)", raw, 3)
    end = ADV_HEADER_LEN + n * ADV_CHANNEL_LEN
    if len(raw) < end:
        _fail(
            f"beacon data of {len(raw)} bytes is too short for {n} channels ({end} bytes)",
            raw,
            len(raw),
        )
    uptime_s = int.from_bytes(raw[5:8], "little")
    channels: list[Channel] = []
    values: list[float] = []
    seen: set[int] = set()
    for i in range(n):
        offset = ADV_HEADER_LEN + i * ADV_CHANNEL_LEN
        code, value = _CHANNEL.unpack_from(raw, offset)
        if code in seen:
            _fail(f"beacon channel type 0x{code:02x} appears twice", raw, offset)
        seen.add(code)
        ctype = ADV_CHANNEL_TYPES.get(code)
        if ctype is None or value == ADV_NOT_AVAILABLE:
            continue  # newer channel types are skipped so older gateways keep working
        channels.append(ctype.channel)
        values.append(value / ctype.divisor)
    if not channels:
        _fail("beacon advert carries no value this gateway knows", raw, ADV_HEADER_LEN)
    return ReadingBatch(
        node_id=local_name,
        boot_id=boot_id,
        seq=seq,
        time_base=TimeBase.UPTIME_MS,
        channels=tuple(channels),
        samples=(Sample(uptime_s * 1000, tuple(values)),),
    )


def _ad(ad_type: int, data: bytes) -> bytes:
    return bytes((len(data) + 1, ad_type)) + data


def advertising_data(
    node_id: str, manufacturer_payload: bytes, *, flags: int = DEFAULT_AD_FLAGS
) -> tuple[bytes, bytes]:
    """Raw advertising and scan-response data for a beacon.

    The local name goes into the advertisement when it fits in 31 bytes, otherwise into
    the scan response (the gateway scans actively, so it sees both).
    """
    if not is_valid_node_id(node_id):
        _fail(f"node id {node_id!r} is not 1..32 characters of [A-Za-z0-9._-]")
    mfr = _ad(AD_MANUFACTURER_DATA, ADV_COMPANY_ID.to_bytes(2, "little") + manufacturer_payload)
    adv = _ad(AD_FLAGS, bytes((flags,))) + mfr
    name = _ad(AD_COMPLETE_LOCAL_NAME, node_id.encode("ascii"))
    if len(adv) > LEGACY_ADV_MAX:
        _fail(
            f"beacon advert of {len(adv)} bytes does not fit {LEGACY_ADV_MAX}; send fewer channels"
        )
    if len(adv) + len(name) <= LEGACY_ADV_MAX:
        return adv + name, b""
    return adv, name


# -- Environmental Sensing Service characteristic values (GATT Specification Supplement) ----

_ESS_TEMP_UNKNOWN: Final = -32768
_ESS_HUMIDITY_UNKNOWN: Final = 0xFFFF


def _ess_len(data: bytes, want: int, what: str) -> bytes:
    raw = bytes(data)
    if len(raw) != want:
        _fail(f"ESS {what}: {len(raw)} bytes, expected {want}", raw, min(len(raw), want))
    return raw


def encode_ess_temperature(deg_c: float | None) -> bytes:
    """Temperature (0x2A6E): sint16, 0.01 degC; ``None`` sends "unknown"."""
    if deg_c is None:
        return _ESS_TEMP_UNKNOWN.to_bytes(2, "little", signed=True)
    raw = round(deg_c * 100) if math.isfinite(deg_c) else None
    if raw is None or not -27315 <= raw <= 32767:
        _fail(f"ESS temperature {deg_c} degC is outside -273.15..327.67")
    return raw.to_bytes(2, "little", signed=True)


def decode_ess_temperature(data: bytes) -> float | None:
    raw = int.from_bytes(_ess_len(data, 2, "temperature"), "little", signed=True)
    return None if raw == _ESS_TEMP_UNKNOWN else raw / 100


def encode_ess_humidity(percent: float | None) -> bytes:
    """Humidity (0x2A6F): uint16, 0.01 %; ``None`` sends "unknown"."""
    if percent is None:
        return _ESS_HUMIDITY_UNKNOWN.to_bytes(2, "little")
    raw = round(percent * 100) if math.isfinite(percent) else None
    if raw is None or not 0 <= raw <= 10000:
        _fail(f"ESS humidity {percent} % is outside 0..100")
    return raw.to_bytes(2, "little")


def decode_ess_humidity(data: bytes) -> float | None:
    raw_bytes = _ess_len(data, 2, "humidity")
    raw = int.from_bytes(raw_bytes, "little")
    if raw == _ESS_HUMIDITY_UNKNOWN:
        return None
    if raw > 10000:
        _fail(f"ESS humidity {raw / 100} % is outside 0..100", raw_bytes, 0)
    return raw / 100


def encode_ess_pressure(pa: float) -> bytes:
    """Pressure (0x2A6D): uint32, 0.1 Pa."""
    raw = round(pa * 10) if math.isfinite(pa) else None
    if raw is None or not 0 <= raw <= 0xFFFF_FFFF:
        _fail(f"ESS pressure {pa} Pa is outside 0..429496729.5")
    return raw.to_bytes(4, "little")


def decode_ess_pressure(data: bytes) -> float:
    return int.from_bytes(_ess_len(data, 4, "pressure"), "little") / 10
