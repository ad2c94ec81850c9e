"""SMP serial line framing on the node side: smp.packet's encoding, our reassembly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_tools.sim.smp_serial_link import SmpLineDecoder, encode_smp_lines

messages = st.binary(min_size=8, max_size=3000)


@given(st.lists(messages, min_size=1, max_size=4))
def test_encoded_messages_decode_back_whole_and_in_order(batch: list[bytes]) -> None:
    wire = b"".join(encode_smp_lines(m) for m in batch)
    assert SmpLineDecoder().feed(wire) == batch


@given(st.lists(messages, min_size=1, max_size=3), st.data())
def test_feeding_in_arbitrary_pieces_equals_feeding_at_once(
    batch: list[bytes], data: st.DataObject
) -> None:
    wire = b"".join(encode_smp_lines(m) for m in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20)))
    decoder = SmpLineDecoder()
    out: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        out.extend(decoder.feed(wire[start:end]))
    assert out == batch


def test_console_output_between_frames_is_skipped() -> None:
    wire = b"uart:~$ boot ok\n" + encode_smp_lines(b"A" * 300) + b"[00:00:01] log line\n"
    decoder = SmpLineDecoder()
    assert decoder.feed(wire) == [b"A" * 300]
    assert decoder.errors == 0


def test_a_damaged_frame_is_dropped_and_counted_and_the_next_one_decodes() -> None:
    damaged = bytearray(encode_smp_lines(b"B" * 200))
    damaged[10] = ord("A") if damaged[10] != ord("A") else ord("B")  # flips base64 -> bad CRC
    decoder = SmpLineDecoder()
    assert decoder.feed(bytes(damaged) + encode_smp_lines(b"C" * 20)) == [b"C" * 20]
    assert decoder.errors == 1


@settings(max_examples=200)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise_and_the_buffer_stays_bounded(noise: bytes) -> None:
    decoder = SmpLineDecoder(max_line_bytes=256)
    decoder.feed(noise)
    decoder.feed(b"\x06\x09" + noise.replace(b"\n", b"") + b"\n")
    assert len(decoder._line) <= 256  # noqa: SLF001 - the bound is on the buffer itself, which no public API exposes
