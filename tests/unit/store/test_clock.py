"""NodeClock: node time onto gateway wall time, and when the two disagree (skew)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol.messages import TimeBase
from gateway.store.clock import NodeClock

UPTIME, UNIX = TimeBase.UPTIME_MS, TimeBase.UNIX_MS
LIMIT = 2000


def test_uptime_maps_through_the_smallest_delay_seen() -> None:
    clock = NodeClock(LIMIT)
    assert clock.to_wall_ms(UPTIME, 1_000, rx_ms=101_000) == 101_000
    # Arrived 300 ms late: still stamped on the estimated clock, not on its arrival.
    assert clock.to_wall_ms(UPTIME, 2_000, rx_ms=102_300) == 102_000
    # Arrived sooner than the estimate allows: the estimate moves down to it.
    assert clock.to_wall_ms(UPTIME, 3_000, rx_ms=102_900) == 102_900
    assert clock.to_wall_ms(UPTIME, 4_000, rx_ms=104_000) == 103_900
    assert not clock.skewed


def test_a_node_clock_running_fast_is_flagged_when_the_estimate_jumps_by_the_limit() -> None:
    clock = NodeClock(LIMIT)
    clock.to_wall_ms(UPTIME, 0, rx_ms=100_000)
    clock.to_wall_ms(UPTIME, 10_000, rx_ms=100_000 + 10_000 - LIMIT)  # exactly the limit
    assert not clock.skewed
    clock.to_wall_ms(UPTIME, 20_000, rx_ms=100_000 + 20_000 - 2 * LIMIT - 1)
    assert clock.skewed


def test_a_node_clock_running_slow_is_flagged_once_a_whole_window_arrives_late() -> None:
    clock = NodeClock(LIMIT, window=8)
    clock.to_wall_ms(UPTIME, 0, rx_ms=100_000)
    for i in range(1, 8):  # seven late messages: the on-time first one is still in the window
        clock.to_wall_ms(UPTIME, i * 1000, rx_ms=100_000 + i * 1000 + LIMIT + 1)
        assert not clock.skewed
    clock.to_wall_ms(UPTIME, 8_000, rx_ms=100_000 + 8_000 + LIMIT + 1)
    assert clock.skewed


def test_one_on_time_message_in_the_window_means_no_slow_skew() -> None:
    clock = NodeClock(LIMIT, window=8)
    clock.to_wall_ms(UPTIME, 0, rx_ms=100_000)
    for i in range(1, 40):
        late = 0 if i % 8 == 0 else LIMIT + 500  # every eighth message on time
        clock.to_wall_ms(UPTIME, i * 1000, rx_ms=100_000 + i * 1000 + late)
    assert not clock.skewed


def test_wall_clock_nodes_keep_their_timestamps_and_are_flagged_outside_the_range() -> None:
    clock = NodeClock(LIMIT)
    assert clock.to_wall_ms(UNIX, 5_000_000, rx_ms=5_000_500) == 5_000_000
    assert not clock.skewed
    clock.to_wall_ms(UNIX, 5_000_000 + LIMIT + 1, rx_ms=5_000_000)  # from the future
    assert clock.skewed
    clock.to_wall_ms(UNIX, 5_000_000 - 60 * LIMIT, rx_ms=5_000_000)  # late, within room
    assert not clock.skewed
    clock.to_wall_ms(UNIX, 5_000_000 - 60 * LIMIT - 1, rx_ms=5_000_000)
    assert clock.skewed


def reference_slow_skew(delays: list[int], window: int, limit: int) -> bool:
    """The rule as written: some point where the last ``window`` delays, after more than
    ``window`` messages, all exceed the limit."""
    return any(
        n > window and min(delays[n - window : n]) > limit for n in range(1, len(delays) + 1)
    )


@given(st.lists(st.integers(0, 5_000), min_size=1, max_size=80), st.integers(1, 10))
def test_slow_skew_matches_the_rule_over_any_arrival_pattern(
    lateness: list[int], window: int
) -> None:
    clock = NodeClock(LIMIT, window=window)
    clock.to_wall_ms(UPTIME, 0, rx_ms=1_000_000)  # the first message sets the estimate
    delays = [0]
    for i, late in enumerate(lateness, start=1):
        clock.to_wall_ms(UPTIME, i * 1000, rx_ms=1_000_000 + i * 1000 + late)
        delays.append(late)
    assert clock.skewed == reference_slow_skew(delays, window, LIMIT)


def test_a_timestamp_from_the_future_is_replaced_by_the_receive_time() -> None:
    clock = NodeClock(LIMIT)
    ten_years_ms = 10 * 365 * 86_400_000
    assert clock.to_wall_ms(UNIX, 5_000_000 + ten_years_ms, rx_ms=5_000_000) == 5_000_000
    assert clock.skewed
    # Within the limit ahead it is believed (clocks differ a little).
    assert clock.to_wall_ms(UNIX, 5_000_000 + LIMIT, rx_ms=5_000_000) == 5_000_000 + LIMIT


@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 200_000), min_size=1, max_size=12),
            st.integers(0, 300_000),
        ),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from([UPTIME, UNIX]),
    st.integers(2, 6),
)
def test_a_whole_batch_maps_exactly_as_its_samples_one_by_one(
    batches: list[tuple[list[int], int]], time_base: TimeBase, window: int
) -> None:
    one_by_one, many = NodeClock(LIMIT, window=window), NodeClock(LIMIT, window=window)
    for node_ts, rx_ms in batches:
        expected = tuple(one_by_one.to_wall_ms(time_base, t, rx_ms) for t in node_ts)
        assert many.to_wall_ms_many(time_base, node_ts, rx_ms) == expected
        assert many == one_by_one  # the same state after every batch, skew flag included
