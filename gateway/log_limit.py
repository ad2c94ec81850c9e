"""Warnings that untrusted input can trigger, at most once per interval with a count.

A stream of bad messages must not become a stream of log lines (an SD card fills at a
megabyte a second): the first occurrence is logged at once, the rest are counted and
reported in one line when the interval has passed and the next one arrives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class LimitedWarning:
    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._next_at = 0.0
        self._suppressed = 0
        self.logged = 0

    def warning(self, msg: str, *args: object) -> None:
        now = self._clock()
        if now < self._next_at:
            self._suppressed += 1
            return
        if self._suppressed:
            msg += " (and %d more like it in the last %.0f s)"
            args = (*args, self._suppressed, self._interval_s)
        self._logger.warning(msg, *args)
        self.logged += 1
        self._suppressed = 0
        self._next_at = now + self._interval_s
