"""The one backoff: doubling steps up to a cap, each delay jittered within its step."""

from __future__ import annotations

import random

from gateway.retry import Backoff


def test_delays_double_from_the_first_step_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    backoff = Backoff(first_s=0.5, max_s=4.0, rng=random.Random(7))
    for _ in range(20):
        backoff.reset()
        delays = [backoff.next_delay() for _ in range(6)]
        steps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
        assert all(step / 2 <= d <= step for d, step in zip(delays, steps, strict=True))


def test_reset_starts_again_from_the_first_step() -> None:
    backoff = Backoff(first_s=1.0, max_s=60.0, rng=random.Random(1))
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0


def test_numbered_attempts_match_the_stateful_sequence() -> None:
    stateless = Backoff(first_s=0.1, max_s=30.0, rng=random.Random(3))
    stateful = Backoff(first_s=0.1, max_s=30.0, rng=random.Random(3))
    assert [stateless.delay(a) for a in range(10)] == [stateful.next_delay() for _ in range(10)]


def test_jitter_spreads_links_that_failed_together() -> None:
    delays = {Backoff(first_s=1.0, max_s=1.0).next_delay() for _ in range(50)}
    assert len(delays) > 40
