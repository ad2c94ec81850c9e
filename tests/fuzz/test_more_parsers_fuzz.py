"""Hostile bytes into the parsers test_codec_fuzz.py does not cover.

The model-transfer codec, signed manifests (CBOR and JSON), the MCUmgr console codec and
SMP replies, and the BLE environmental-sensing values: each may only raise its documented
error, never crash or hang. Each runs a bounded number of examples by default and 10,000
under ``-m slow`` (``make test`` runs the default; ``pytest -m slow tests/fuzz`` the long).
"""

from __future__ import annotations

import functools
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_tools.describe import build_manifest
from firmware_tools.flash.mcumgr.codec import LineDecoder, decode_reply, encode
from firmware_tools.signing import sign_manifest
from gateway.errors import CodecError, ModelError
from gateway.protocol import xfer
from gateway.protocol.adv import decode_ess_humidity, decode_ess_pressure, decode_ess_temperature
from gateway.protocol.signed_manifest import SignedManifest

MODEL = Path(__file__).resolve().parents[2] / "tinymodels" / "artifacts" / "node_model.tflite"
BUDGETS = [500, pytest.param(10_000, marks=pytest.mark.slow)]
_MAX_CALL_S = 1.0


def run(budget: int, strategy: st.SearchStrategy[Any], check: Callable[[Any], None]) -> None:
    settings(
        max_examples=budget,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(given(strategy)(check))()


def only(expect: type[Exception] | tuple[type[Exception], ...], fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    try:
        return fn()
    except expect:
        return None
    finally:
        assert time.perf_counter() - start < _MAX_CALL_S


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Valid encodings with bytes flipped, cut, or inserted: deeper than random bytes."""

    def mutate(data: tuple[bytes, list[tuple[int, int]], int, bytes]) -> bytes:
        seed, flips, cut, extra = data
        out = bytearray(seed)
        for pos, val in flips:
            if out:
                out[pos % len(out)] = val
        return bytes(out[: cut % (len(out) + 1)]) + extra

    return st.tuples(
        st.sampled_from(seeds),
        st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6),
        st.integers(0, 1 << 16),
        st.binary(max_size=8),
    ).map(mutate)


def _xfer_seeds() -> list[bytes]:
    return [
        xfer.encode(xfer.Begin(1, 4096, 512, 4, b"\xa0")),
        xfer.encode(xfer.Chunk.of(512, bytes(range(200)))),
        xfer.encode(xfer.Offset(1, 1024, 512, 4)),
        xfer.encode(xfer.ChunkAck(2048)),
        xfer.encode(xfer.ChunkNack(512, xfer.NackWhy(next(iter(xfer.NackWhy))))),
        xfer.encode(xfer.Result(1, next(iter(xfer.ResultOutcome)), None, "detail")),
    ]


@pytest.mark.parametrize("budget", BUDGETS)
def test_xfer_decode_raises_only_codec_error(budget: int) -> None:
    def check(data: bytes) -> None:
        msg = only(CodecError, lambda: xfer.decode(data))
        if msg is not None:  # whatever decodes re-encodes
            assert xfer.decode(xfer.encode(msg)) == msg

    run(budget, st.one_of(st.binary(max_size=300), mutated(_xfer_seeds())), check)


def _signed_seeds() -> tuple[list[bytes], list[bytes]]:
    artifact = MODEL.read_bytes()
    manifest = build_manifest(artifact, name="node_model", version="1.0.0", sequence=3)
    signed = sign_manifest(manifest, Ed25519PrivateKey.generate())
    return [signed.to_cbor()], [signed.to_json().encode()]


@pytest.mark.parametrize("budget", BUDGETS)
def test_signed_manifest_parsers_raise_only_model_error(budget: int) -> None:
    cbor_seeds, json_seeds = _signed_seeds()

    def check(data: bytes) -> None:
        only(ModelError, lambda: SignedManifest.from_cbor(data))
        only(ModelError, lambda: SignedManifest.from_json(data))

    envelope = st.dictionaries(
        st.sampled_from(["alg", "key_id", "manifest", "signature", "x"]),
        st.one_of(st.binary(max_size=40), st.text(max_size=20), st.integers(), st.none()),
    ).map(cbor2.dumps)
    run(budget, st.one_of(mutated(cbor_seeds), mutated(json_seeds), envelope), check)


def _smp_seed(body: dict[str, Any]) -> bytes:
    payload = cbor2.dumps(body)
    # SMP v1 header: op=3 (write rsp), flags, length, group 8 (fs), seq, command 0.
    return struct.pack("!BBHHBB", 3, 0, len(payload), 8, 7, 0) + payload


@pytest.mark.parametrize("budget", BUDGETS)
def test_mcumgr_console_and_replies_never_crash(budget: int) -> None:
    seeds = [
        _smp_seed({"off": 1024}),
        _smp_seed({"rc": 3}),
        _smp_seed({"err": {"group": 8, "rc": 2}}),
    ]
    lines = [encode(s) for s in seeds]

    def check(data: bytes) -> None:
        decoder = LineDecoder()
        start = time.perf_counter()
        messages = decoder.feed(data) + decoder.feed(b"\n")
        assert time.perf_counter() - start < _MAX_CALL_S
        for message in messages:
            only(CodecError, functools.partial(decode_reply, message))
        only(CodecError, lambda: decode_reply(data))

    run(budget, st.one_of(st.binary(max_size=400), mutated(lines), mutated(seeds)), check)


@pytest.mark.parametrize("budget", BUDGETS)
def test_ess_values_decode_or_refuse(budget: int) -> None:
    def check(data: bytes) -> None:
        for decoder in (decode_ess_temperature, decode_ess_humidity, decode_ess_pressure):
            only(CodecError, functools.partial(decoder, data))

    run(budget, st.binary(max_size=8), check)


def test_a_damaged_console_frame_is_skipped_and_the_next_one_decodes() -> None:
    good = _smp_seed({"off": 1024})
    frame = bytearray(encode(good))
    frame[5] ^= 0x01  # damage a base64 character of the first frame
    decoder = LineDecoder()
    got = decoder.feed(bytes(frame) + encode(good))
    assert got == [good]
    assert zlib.crc32(got[0]) == zlib.crc32(good)
