"""Beacon advertisements and ESS characteristic values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import PayloadError
from gateway.protocol.adv import (
    ADV_CHANNEL_TYPES,
    LEGACY_ADV_MAX,
    adv_raw_value,
    advertising_data,
    decode_adv,
    decode_ess_humidity,
    decode_ess_pressure,
    decode_ess_temperature,
    encode_adv,
    encode_ess_humidity,
    encode_ess_pressure,
    encode_ess_temperature,
)
from gateway.protocol.ble_layout import ADV_COMPANY_ID
from gateway.protocol.messages import Channel, ReadingBatch, Sample, TimeBase
from gateway.protocol.payload import encode_message
from tests.unit.protocol import strategies as sts


def test_documented_advert_example() -> None:
    data = encode_adv(
        boot_id=3, seq=9, uptime_s=100, values=[("temperature", 21.34), ("humidity", 55.5)]
    )
    assert data == bytes.fromhex("22 0300 0900 640000 01 5608 02 ae15")
    assert decode_adv(data, "bcn-01") == ReadingBatch(
        node_id="bcn-01",
        boot_id=3,
        seq=9,
        time_base=TimeBase.UPTIME_MS,
        channels=(Channel("temperature", "degC"), Channel("humidity", "%")),
        samples=(Sample(100_000, (21.34, 55.5)),),
    )


@st.composite
def channel_values(draw: st.DrawFn) -> tuple[tuple[str, int], ...]:
    names = draw(
        st.lists(
            st.sampled_from(sorted(t.name for t in ADV_CHANNEL_TYPES.values())),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    return tuple((name, draw(st.integers(-32767, 32767))) for name in names)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 0xFFFF),
    st.integers(1, 0xFFFF),
    st.integers(0, 0xFF_FFFF),
    channel_values(),
    sts.node_ids,
)
def test_advert_round_trips_at_channel_resolution(
    boot_id: int, seq: int, uptime_s: int, raws: tuple[tuple[str, int], ...], name: str
) -> None:
    by_name = {t.name: t for t in ADV_CHANNEL_TYPES.values()}
    values = [(n, raw / by_name[n].divisor) for n, raw in raws]
    data = encode_adv(boot_id=boot_id, seq=seq, uptime_s=uptime_s, values=values)
    batch = decode_adv(data, name)
    assert batch.node_id == name
    assert (batch.boot_id, batch.seq, batch.samples[0].t) == (boot_id, seq, uptime_s * 1000)
    assert [c.name for c in batch.channels] == [n for n, _ in values]
    assert batch.samples[0].values == tuple(v for _, v in values)
    # What the beacon decoder builds is a valid protocol message.
    encode_message(batch)
    # Re-encoding the decoded values gives the same raw numbers.
    assert [
        adv_raw_value(n, v) for (n, _), v in zip(raws, batch.samples[0].values, strict=True)
    ] == [raw for _, raw in raws]


def test_two_channels_and_a_short_name_fit_one_legacy_advert() -> None:
    data = encode_adv(
        boot_id=1, seq=1, uptime_s=0, values=[("temperature", 20.0), ("humidity", 40.0)]
    )
    adv, scan_response = advertising_data("bcn-0001", data)
    assert len(adv) <= LEGACY_ADV_MAX
    assert scan_response == b""
    assert adv.endswith(b"\x09\x09bcn-0001")
    assert adv[:3] == b"\x02\x01\x06"
    assert (
        adv[3:8] == bytes((len(data) + 3, 0xFF)) + ADV_COMPANY_ID.to_bytes(2, "little") + data[:1]
    )


def test_a_long_name_moves_to_the_scan_response() -> None:
    data = encode_adv(boot_id=1, seq=1, uptime_s=0, values=[("temperature", 20.0)] * 1)
    adv, scan_response = advertising_data("greenhouse-north-bench-07", data)
    assert len(adv) <= LEGACY_ADV_MAX
    assert scan_response == b"\x1a\x09greenhouse-north-bench-07"


def test_unknown_channel_types_and_unavailable_values_are_left_out() -> None:
    data = bytearray(
        encode_adv(
            boot_id=1,
            seq=2,
            uptime_s=3,
            values=[("temperature", 1.0), ("humidity", None), ("co2", 400)],
        )
    )
    data[8] = 0x7F  # a channel type from a newer format
    batch = decode_adv(bytes(data) + b"future", "b1")
    assert batch.channels == (Channel("co2", "ppm"),)
    assert batch.samples[0].values == (400.0,)


@pytest.mark.parametrize(
    ("data", "name", "reason", "offset"),
    [
        (b"\x21\x00", "b1", "beacon data of 2 bytes is shorter than the 8-byte header", 2),
        (
            bytes.fromhex("41 0100 0100 000000 015608"),
            "b1",
            "unsupported beacon format version 2 (this gateway reads 1)",
            0,
        ),
        (
            bytes.fromhex("20 0100 0100 000000"),
            "b1",
            "beacon channel count 0 is out of range 1..4",
            0,
        ),
        (
            bytes.fromhex("21 0100 0000 000000 015608"),
            "b1",
            "beacon seq 0 is invalid (seqs start at 1)",
            3,
        ),
        (
            bytes.fromhex("22 0100 0100 000000 015608"),
            "b1",
            "beacon data of 11 bytes is too short for 2 channels (14 bytes)",
            11,
        ),
        (
            bytes.fromhex("22 0100 0100 000000 015608 015608"),
            "b1",
            "beacon channel type 0x01 appears twice",
            11,
        ),
        (
            bytes.fromhex("21 0100 0100 000000 010080"),
            "b1",
            "beacon advert carries no value this gateway knows",
            8,
        ),
        (
            bytes.fromhex("21 0100 0100 000000 015608"),
            "b 1",
            "local name 'b 1' is not a node id (1..32 characters of [A-Za-z0-9._-])",
            0,
        ),
    ],
)
def test_bad_adverts_name_what_and_where(data: bytes, name: str, reason: str, offset: int) -> None:
    with pytest.raises(PayloadError) as info:
        decode_adv(data, name)
    assert (info.value.reason, info.value.offset) == (reason, offset)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seq": 0}, "seq 0 is out of range 1..65535; start a new boot_id"),
        ({"boot_id": 70_000}, "boot_id 70000 is out of range"),
        ({"values": [("temperature", 400.0)]}, "outside the int16 range"),
        ({"values": [("rainfall", 1.0)]}, "no beacon channel type named 'rainfall'"),
        ({"values": [("co2", 1.0)] * 5}, "1..4 channels, got 5"),
    ],
)
def test_encode_adv_rejects_what_does_not_fit(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"boot_id": 1, "seq": 1, "uptime_s": 0, "values": [("co2", 400.0)]}
    args.update(kwargs)
    with pytest.raises(PayloadError, match=match):
        encode_adv(**args)  # type: ignore[arg-type]


# -- ESS ---------------------------------------------------------------------------------------


def test_ess_values_follow_the_gatt_specification_supplement() -> None:
    assert encode_ess_temperature(21.5) == bytes.fromhex("6608")
    assert encode_ess_temperature(-10.0) == (-1000).to_bytes(2, "little", signed=True)
    assert encode_ess_temperature(None) == bytes.fromhex("0080")
    assert decode_ess_temperature(bytes.fromhex("6608")) == 21.5
    assert decode_ess_temperature(bytes.fromhex("0080")) is None
    assert encode_ess_humidity(45.67) == (4567).to_bytes(2, "little")
    assert decode_ess_humidity(bytes.fromhex("ffff")) is None
    assert decode_ess_humidity((4567).to_bytes(2, "little")) == 45.67
    assert encode_ess_pressure(101325.0) == (1013250).to_bytes(4, "little")
    assert decode_ess_pressure((1013250).to_bytes(4, "little")) == 101325.0


def test_ess_wrong_length_is_a_payload_error() -> None:
    with pytest.raises(PayloadError) as info:
        decode_ess_pressure(b"\x01\x02")
    assert info.value.reason == "ESS pressure: 2 bytes, expected 4"


def test_ess_out_of_range_humidity_is_rejected() -> None:
    with pytest.raises(PayloadError, match=r"outside 0\.\.100"):
        decode_ess_humidity((10001).to_bytes(2, "little"))
    with pytest.raises(PayloadError, match=r"outside 0\.\.100"):
        encode_ess_humidity(101.0)
