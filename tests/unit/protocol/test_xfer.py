"""Our binary transfer: codec round trips and fuzzing, the sender's window, the node's end."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_tools.sim.selftest import node_self_test
from firmware_tools.sim.slots import SlotStore
from firmware_tools.sim.xfer_node import XferNode
from gateway.errors import PayloadError
from gateway.protocol import xfer
from gateway.protocol.messages import SlotInfo
from gateway.protocol.payload import decode_message
from gateway.protocol.slots import NodeInfo, RefusalReason
from tests.unit.firmware_tools.sim.models import (
    RAM_BYTES,
    SLOT_BYTES,
    TARGET,
    artifact,
    padded,
    signed_model,
)

INFO = NodeInfo(
    "pump-01",
    TARGET,
    SLOT_BYTES,
    RAM_BYTES,
    (
        SlotInfo(0, "node_model", "1.1.0", b"\x01" * 8, 1, False, True),
        SlotInfo(1, "node_model", "1.2.0-rc.1", b"\xff" * 8, 2, True, False),
    ),
)

MESSAGES: list[xfer.XferMessage] = [
    xfer.Begin(7, 4472, 1024, 8, b"\xa4signed"),
    xfer.Begin(8, 1, 1, 1, b""),
    xfer.Chunk.of(0, b"\x00\x01\x00"),
    xfer.Chunk.of(2**32 - 1, bytes(xfer.MAX_CHUNK_BYTES)),
    xfer.Request(xfer.Op.END, 0),
    xfer.Request(xfer.Op.ACTIVATE, 65535),
    xfer.Request(xfer.Op.INFO, 3),
    xfer.Request(xfer.Op.ROLLBACK, 4),
    xfer.Offset(7, 2048, 1024, 8),
    xfer.ChunkAck(4096),
    xfer.ChunkNack(1024, xfer.NackWhy.CRC),
    xfer.Result(9, xfer.ResultOutcome.OK, info=INFO),
    xfer.Result(9, xfer.ResultOutcome.REFUSED, RefusalReason.OLD_SEQUENCE, "seq 1 <= 2 ü"),
    xfer.Result(9, xfer.ResultOutcome.REVERTED, RefusalReason.SELF_TEST_FAILED, "", INFO),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_decodes_to_what_was_encoded(msg: xfer.XferMessage) -> None:
    assert xfer.decode(xfer.encode(msg)) == msg


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_the_gateway_message_decoder_rejects_transfer_payloads_instead_of_misreading_them(
    msg: xfer.XferMessage,
) -> None:
    with pytest.raises(PayloadError):
        decode_message(xfer.encode(msg))


def test_a_chunk_whose_data_was_altered_fails_its_crc() -> None:
    chunk = xfer.Chunk.of(0, b"model bytes")
    payload = bytearray(xfer.encode(chunk))
    payload[-1] ^= 0x40
    decoded = xfer.decode(bytes(payload))
    assert isinstance(decoded, xfer.Chunk)
    assert not decoded.crc_ok


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xfc", b"\xa1\x00\x01", b"\xfc\x7f", b"\xfc\x02\x00\x00", b"\xfc\x05\x01\x00\x00"],
    ids=["empty", "magic-only", "cbor-map", "unknown-op", "short-chunk", "trailing-bytes"],
)
def test_malformed_payloads_raise_the_codec_error(payload: bytes) -> None:
    with pytest.raises(xfer.XferCodecError):
        xfer.decode(payload)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64) | st.binary(max_size=64).map(lambda b: b"\xfc" + b))
def test_random_bytes_decode_or_raise_the_codec_error_and_nothing_else(data: bytes) -> None:
    try:
        msg = xfer.decode(data)
    except xfer.XferCodecError:
        return
    assert xfer.decode(xfer.encode(msg)) == msg


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MESSAGES), st.integers(0, 200), st.integers(0, 255))
def test_a_flipped_byte_in_any_message_never_crashes_the_decoder(
    msg: xfer.XferMessage, where: int, value: int
) -> None:
    payload = bytearray(xfer.encode(msg))
    payload[where % len(payload)] = value
    with contextlib.suppress(xfer.XferCodecError):
        xfer.decode(bytes(payload))


def test_the_sender_keeps_at_most_a_window_in_flight_and_slides_on_acks() -> None:
    sender = xfer.ChunkSender(bytes(10_000), start=0, chunk_bytes=1000, window=4)
    first = sender.next_chunks()
    assert [c.offset for c in first] == [0, 1000, 2000, 3000]
    assert sender.next_chunks() == []
    assert sender.on_ack(2000)
    assert [c.offset for c in sender.next_chunks()] == [4000, 5000]
    assert not sender.on_ack(1000)  # stale


def test_a_nack_goes_back_once_for_a_gap_and_a_timeout_resends_from_the_last_ack() -> None:
    sender = xfer.ChunkSender(bytes(8000), start=0, chunk_bytes=1000, window=4)
    sender.next_chunks()
    sender.on_nack(1000)  # chunk 1000 lost; 2000 arrived out of order
    sender.on_nack(1000)  # and so did 3000: same gap, no second rewind
    assert [c.offset for c in sender.next_chunks()] == [1000, 2000, 3000, 4000]
    sender.on_timeout()
    assert sender.next_chunks()[0].offset == 1000
    assert sender.resends == 2


def test_the_sender_starts_at_the_resume_offset() -> None:
    sender = xfer.ChunkSender(bytes(5000), start=3000, chunk_bytes=1000, window=8)
    assert [c.offset for c in sender.next_chunks()] == [3000, 4000]
    assert sender.bytes_sent == 2000


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def make_node(path: Path, key: Ed25519PrivateKey) -> XferNode:
    store = SlotStore.open(
        path, public_key=key.public_key(), target=TARGET, slot_bytes=SLOT_BYTES, ram_bytes=RAM_BYTES
    )
    v1 = signed_model(key, 1)
    store.install_factory(v1.artifact, v1.cbor)
    return XferNode("pump-01", store, node_self_test(RAM_BYTES))


def ask(node: XferNode, msg: xfer.XferMessage) -> xfer.XferMessage:
    replies = node.handle(xfer.encode(msg))
    assert len(replies) == 1
    return xfer.decode(replies[0])


@pytest.mark.parametrize("seed", range(6))
def test_a_transfer_over_a_lossy_reordering_channel_completes_with_the_exact_bytes(
    tmp_path: Path, key: Ed25519PrivateKey, seed: int
) -> None:
    rng = random.Random(seed)
    model = signed_model(key, 2, data=padded(artifact(), 20_000))
    node = make_node(tmp_path, key)
    offset = ask(node, xfer.Begin(1, len(model.artifact), 512, 8, model.cbor))
    assert isinstance(offset, xfer.Offset)
    assert offset.offset == 0
    sender = xfer.ChunkSender(model.artifact, start=0, chunk_bytes=512, window=8)
    for _round in range(2000):
        if sender.done:
            break
        batch = sender.next_chunks()
        rng.shuffle(batch)
        replies: list[bytes] = []
        for chunk in batch:
            if rng.random() < 0.15:
                continue  # lost on the way
            data = xfer.encode(chunk)
            if rng.random() < 0.05:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])  # corrupted on the way
            replies += node.handle(data)
        if not replies:
            sender.on_timeout()
        for raw in replies:
            msg = xfer.decode(raw)
            if isinstance(msg, xfer.ChunkAck):
                sender.on_ack(msg.offset)
            elif isinstance(msg, xfer.ChunkNack):
                sender.on_nack(msg.offset)
    assert sender.done
    end = ask(node, xfer.Request(xfer.Op.END, 2))
    assert isinstance(end, xfer.Result)
    assert end.outcome is xfer.ResultOutcome.OK
    assert node.store.slot_artifact(1) == model.artifact


def test_the_node_refuses_a_begin_without_a_signed_manifest(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    node = make_node(tmp_path, key)
    answer = ask(node, xfer.Begin(1, 100, 1024, 8, b""))
    assert isinstance(answer, xfer.Result)
    assert (answer.outcome, answer.reason) == (xfer.ResultOutcome.REFUSED, RefusalReason.UNSIGNED)


def test_a_repeated_activate_gets_the_first_answer_and_activates_once(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    model = signed_model(key, 2)
    node = make_node(tmp_path, key)
    changes: list[int] = []
    node.on_model_change = lambda _a, m: changes.append(m.sequence)
    ask(node, xfer.Begin(1, len(model.artifact), 2048, 4, model.cbor))
    for off in range(0, len(model.artifact), 2048):
        ask(node, xfer.Chunk.of(off, model.artifact[off : off + 2048]))
    ask(node, xfer.Request(xfer.Op.END, 2))
    first = ask(node, xfer.Request(xfer.Op.ACTIVATE, 3))
    again = ask(node, xfer.Request(xfer.Op.ACTIVATE, 3))
    assert isinstance(first, xfer.Result)
    assert first.outcome is xfer.ResultOutcome.CONFIRMED
    assert again == first
    assert changes == [2]


def test_chunks_without_a_transfer_are_answered_with_an_idle_nack(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    node = make_node(tmp_path, key)
    answer = ask(node, xfer.Chunk.of(0, b"x"))
    assert answer == xfer.ChunkNack(0, xfer.NackWhy.IDLE)
    assert node.handle(b"\xfc\x99") == []
    assert node.bad_payloads == 1
