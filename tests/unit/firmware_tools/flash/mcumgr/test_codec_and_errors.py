"""The SMP console codec (sans-IO), reply decoding, and error codes by name."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from smp.os_management import EchoWriteRequest

from firmware_tools.flash.mcumgr.codec import LineDecoder, decode_reply, encode
from firmware_tools.flash.mcumgr.errors import SmpError, is_permanent, rc_name
from gateway.errors import CodecError


def reply_bytes(body: dict[str, object], group: int = 8, command: int = 0, seq: int = 7) -> bytes:
    payload = cbor2.dumps(body)
    header = bytes([3, 0]) + len(payload).to_bytes(2, "big") + group.to_bytes(2, "big")
    return header + bytes([seq, command]) + payload


@given(st.binary(min_size=8, max_size=3000), st.sampled_from([64, 128, 512]))
def test_a_message_survives_console_framing_whole_or_byte_by_byte(
    message: bytes, line_length: int
) -> None:
    wire = encode(message, line_length)
    assert max(len(line) for line in wire.split(b"\n")) < line_length
    assert LineDecoder().feed(wire) == [message]
    decoder = LineDecoder()
    got = [m for i in range(len(wire)) for m in decoder.feed(wire[i : i + 1])]
    assert got == [message]


def test_log_lines_between_frames_are_skipped() -> None:
    message = EchoWriteRequest(d="hi").BYTES
    wire = b"[00:00:01] <inf> app: booted\r\n" + encode(message) + b"uart:~$ \n" + encode(message)
    assert LineDecoder().feed(wire) == [message, message]


@given(st.binary(max_size=500))
def test_garbage_yields_no_frame_and_no_crash(garbage: bytes) -> None:
    decoder = LineDecoder()
    decoder.feed(garbage)
    message = EchoWriteRequest(d="after").BYTES
    assert decoder.feed(b"\n" + encode(message)) == [message]


def test_a_damaged_frame_is_dropped() -> None:
    wire = bytearray(encode(EchoWriteRequest(d="x" * 40).BYTES))
    wire[10] ^= 0x01  # one base64 character changed: the CRC no longer matches
    assert LineDecoder().feed(bytes(wire)) == []


def test_replies_lift_v1_and_v2_errors_into_one_field() -> None:
    ok = decode_reply(reply_bytes({"off": 1024}))
    assert (ok.rc, ok.err_group, ok.body["off"], ok.sequence) == (0, None, 1024, 7)
    v2 = decode_reply(reply_bytes({"err": {"group": 8, "rc": 3}}))
    assert (v2.rc, v2.err_group) == (3, 8)
    v1 = decode_reply(reply_bytes({"rc": 8}, group=1))
    assert (v1.rc, v1.err_group) == (8, None)
    with pytest.raises(CodecError):
        decode_reply(b"\x00\x01")
    with pytest.raises(CodecError):
        decode_reply(reply_bytes({"a": 1})[:8] + b"\xff\xff")


def test_codes_are_named_by_their_group() -> None:
    assert rc_name(3, 8) == "FILE_NOT_FOUND"
    assert rc_name(3, None) == "EINVAL"
    assert rc_name(22, 1) == "INVALID_IMAGE_HEADER"
    assert rc_name(14, 8) == "MOUNT_POINT_NOT_FOUND"
    assert rc_name(200, 77) == "group 77 error 200"
    err = SmpError("fs-01", "fs upload of /lfs1/model.tflite", 3, 8)
    assert str(err) == "fs-01: FILE_NOT_FOUND in fs upload of /lfs1/model.tflite"
    assert is_permanent(14, 8)
    assert is_permanent(23, 1)
    assert is_permanent(8, None)
    assert not is_permanent(10, None)  # EBUSY: worth another try
    assert not is_permanent(10, 8)  # FILE_WRITE_FAILED may be a full disk being cleaned


def test_the_codec_imports_no_io() -> None:
    source = Path(__file__).resolve().parents[5] / "firmware_tools/flash/mcumgr/codec.py"
    text = source.read_text()
    assert "import asyncio" not in text
    assert "import serial" not in text
