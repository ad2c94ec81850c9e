"""Exponential backoff with jitter: the one retry delay of the project.

The gateway's sources and outputs, the simulated nodes' links and ``flash-model``'s retries
all wait with it. Jitter (each delay drawn from the upper half of its step) keeps a fleet of
links that failed together (a broker restart) from retrying in lockstep and hammering the
recovering service. Imports nothing of ours, so every layer may use it.
"""

from __future__ import annotations

import asyncio
import random


class Backoff:
    """Doubling delays from ``first_s`` up to ``max_s``, each drawn from [step/2, step].

    Stateful use (reconnect loops): :meth:`next_delay` after each failure, :meth:`reset`
    after a good connection. Stateless use (numbered attempts): :meth:`delay`.
    """

    def __init__(
        self, first_s: float = 0.1, max_s: float = 30.0, *, rng: random.Random | None = None
    ) -> None:
        self._first = first_s
        self._max = max_s
        self._attempt = 0
        self._rng = rng

    def delay(self, attempt: int) -> float:
        """The delay after failed ``attempt`` (0-based: the first failure waits ~first_s)."""
        step = min(self._max, self._first * 2**attempt)
        return (self._rng or random).uniform(step / 2, step)

    def reset(self) -> None:
        self._attempt = 0

    def next_delay(self) -> float:
        delay = self.delay(self._attempt)
        self._attempt += 1
        return delay

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay())
