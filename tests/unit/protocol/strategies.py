"""Hypothesis strategies for valid protocol messages (shared by unit and fuzz tests)."""

from __future__ import annotations

from hypothesis import strategies as st

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
)

U32 = 2**32 - 1
T_MAX = 2**63 - 1
NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."

node_ids = st.text(NAME_ALPHABET, min_size=1, max_size=32)
channel_names = st.text(NAME_ALPHABET, min_size=1, max_size=32)
# Printable text as str.isprintable() defines it, including non-ASCII.
printable = st.characters(codec="utf-8").filter(str.isprintable)
units = st.text(printable, max_size=16)
short_texts = st.text(printable, min_size=1, max_size=32)
u32s = st.integers(0, U32)
seqs = st.integers(1, U32)
times = st.integers(0, T_MAX)
time_bases = st.sampled_from(TimeBase)
hashes = st.binary(min_size=8, max_size=8)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# What a Cortex-M usually sends: float32 values, exercising the compact encodings.
float32s = st.floats(allow_nan=False, allow_infinity=False, width=32)
values = st.one_of(finite_floats, float32s, st.integers(-(2**53), 2**53).map(float))


@st.composite
def reading_batches(draw: st.DrawFn, max_samples: int = 20, max_channels: int = 4) -> ReadingBatch:
    names = draw(st.lists(channel_names, min_size=1, max_size=max_channels, unique=True))
    channels = tuple(Channel(name, draw(units)) for name in names)
    n = draw(st.integers(1, max_samples))
    samples = tuple(Sample(draw(times), tuple(draw(values) for _ in channels)) for _ in range(n))
    return ReadingBatch(
        node_id=draw(node_ids),
        boot_id=draw(u32s),
        seq=draw(st.integers(1, U32 - n + 1)),
        time_base=draw(time_bases),
        channels=channels,
        samples=samples,
    )


inferences = st.builds(
    NodeInference,
    node_id=node_ids,
    boot_id=u32s,
    seq=seqs,
    time_base=time_bases,
    t=times,
    model_id=short_texts,
    model_version=short_texts,
    model_hash=hashes,
    score=finite_floats,
    label=st.integers(0, 0xFFFF),
    latency_us=u32s,
)


@st.composite
def slot_tuples(draw: st.DrawFn) -> tuple[SlotInfo, ...]:
    numbers = draw(st.lists(st.integers(0, 7), max_size=3, unique=True))
    return tuple(
        SlotInfo(
            slot=n,
            model_id=draw(short_texts),
            model_version=draw(short_texts),
            model_hash=draw(hashes),
            sequence=draw(u32s),
            active=draw(st.booleans()),
            confirmed=draw(st.booleans()),
        )
        for n in numbers
    )


statuses = st.builds(
    Status,
    node_id=node_ids,
    boot_id=u32s,
    seq=seqs,
    time_base=time_bases,
    t=times,
    uptime_ms=times,
    battery_mv=st.none() | st.integers(0, 0xFFFF),
    rssi_dbm=st.none() | st.integers(-128, 127),
    free_ram_bytes=st.none() | u32s,
    firmware_version=short_texts,
    oldest_unacked_seq=u32s,
    slots=slot_tuples(),
)

acks = st.builds(Ack, node_id=node_ids, boot_id=u32s, up_to_seq=u32s)

arg_values = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    finite_floats,
    st.text(printable, max_size=64),
)
_REQUIRED: dict[CommandKind, dict[str, st.SearchStrategy[float | int | str | bool]]] = {
    CommandKind.SET_THRESHOLD: {"threshold": finite_floats},
    CommandKind.ACTUATE: {"output": st.text(printable, max_size=64), "state": st.booleans()},
    CommandKind.REQUEST_INFO: {},
    CommandKind.REBOOT: {},
}


@st.composite
def commands(draw: st.DrawFn) -> Command:
    kind = draw(st.sampled_from(CommandKind))
    args = {name: draw(strategy) for name, strategy in _REQUIRED[kind].items()}
    extra = draw(
        st.dictionaries(st.text("abcdefghij_", min_size=1, max_size=8), arg_values, max_size=3)
    )
    for name, value in extra.items():
        args.setdefault(name, value)
    pairs = list(args.items())
    order = draw(st.permutations(range(len(pairs))))
    return Command(
        node_id=draw(node_ids),
        cmd_id=draw(u32s),
        kind=kind,
        args=tuple(pairs[i] for i in order),
    )


messages: st.SearchStrategy[Message] = st.one_of(
    reading_batches(), inferences, statuses, acks, commands()
)
