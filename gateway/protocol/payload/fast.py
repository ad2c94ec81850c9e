"""The fast path for the common message, a well-formed ReadingBatch, and its caches.

A node sends the same channel list and node id in every batch; remembering the ones that
passed validation (bounded, cleared when full) takes most of the per-message cost off
single-reading messages. The full decoder (:mod:`gateway.protocol.payload.decode`) fills
the channel cache; this module only reads it.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.protocol.messages import (
    PROTOCOL_VERSION,
    Channel,
    ReadingBatch,
    Sample,
    TimeBase,
    is_valid_node_id,
)
from gateway.protocol.payload.schema import MAX_SAMPLES, TIME_MAX, U32_MAX, MessageType

CHANNEL_CACHE: dict[tuple[tuple[str, str], ...], tuple[Channel, ...]] = {}
CHANNEL_CACHE_MAX: Final = 1024
# The most recent (decoded channel list, channels) pair from the cache.
_LAST_CHANNELS: list[Any] = [None, ()]


def channel_key(raw_channels: list[Any]) -> tuple[tuple[str, str], ...] | None:
    """The cache key of a decoded channel list; None when it is not hashable pairs."""
    try:
        key = tuple((name, unit) for name, unit in raw_channels)
        hash(key)
    except (TypeError, ValueError):  # not pairs, or unhashable parts: the slow path says why
        return None
    return key


_TIME_BASES: Final = {int(tb): tb for tb in TimeBase}
# Node ids that passed validation; bounded like the channel cache.
_VALID_NODE_IDS: set[str] = set()


def fast_reading_batch(obj: dict[Any, Any]) -> ReadingBatch | None:  # noqa: C901 - the hot path: one flat function with no calls per field is what bench.ingest measured
    """The common case, a well-formed ReadingBatch, without building error labels.

    Returns None at the first thing out of the ordinary; the full path then decides and
    names the problem. Anything accepted here is accepted, identically, by the full path
    (tests/unit/protocol check both paths agree).
    """
    version, mtype = obj.get(0), obj.get(1)
    if type(version) is not int or version != PROTOCOL_VERSION or type(mtype) is not int:
        return None
    if mtype != MessageType.READINGS:
        return None
    for key in obj:
        if type(key) is not int:  # bool keys would alias int ones (True == 1)
            return None
    node_id = obj.get(2)
    boot_id = obj.get(3)
    seq = obj.get(4)
    raw_time_base = obj.get(5)
    time_base = _TIME_BASES.get(raw_time_base) if type(raw_time_base) is int else None
    raw_channels = obj.get(7)
    raw_samples = obj.get(8)
    if (
        type(node_id) is not str
        or type(boot_id) is not int
        or type(seq) is not int
        or time_base is None
        or type(raw_channels) is not list
        or type(raw_samples) is not list
        or not 0 <= boot_id <= U32_MAX
        or not 0 < len(raw_samples) <= MAX_SAMPLES
        or not 1 <= seq <= U32_MAX - len(raw_samples) + 1
    ):
        return None
    if node_id not in _VALID_NODE_IDS:
        if not is_valid_node_id(node_id):
            return None
        if len(_VALID_NODE_IDS) >= CHANNEL_CACHE_MAX:
            _VALID_NODE_IDS.clear()
        _VALID_NODE_IDS.add(node_id)
    last_raw, channels = _LAST_CHANNELS
    # A stream of batches repeats one channel list. Equal to a list that passed validation
    # means valid: list equality needs lists all the way down, and a str equals only a str.
    if raw_channels != last_raw:
        key = channel_key(raw_channels)
        cached = None if key is None else CHANNEL_CACHE.get(key)
        if cached is None:
            return None
        channels = cached
        _LAST_CHANNELS[:] = (raw_channels, channels)
    n_channels = len(channels)
    samples = []
    for item in raw_samples:
        if type(item) is not list or len(item) != 2:
            return None
        t, values = item
        if type(t) is not int or not 0 <= t <= TIME_MAX or type(values) is not list:
            return None
        if len(values) != n_channels:
            return None
        for value in values:
            if type(value) is not float or value - value != 0.0:
                return None
        samples.append(Sample(t, tuple(values)))
    return ReadingBatch(node_id, boot_id, seq, time_base, channels, tuple(samples))
