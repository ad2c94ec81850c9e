"""Map node time onto gateway wall time (architecture invariant 6).

Nodes without a clock stamp readings with milliseconds of uptime. For each
(node, boot) the gateway keeps ``offset = receive_time - node_time``; the smallest
offset seen is the best estimate (a message can arrive late, never early), so the
estimate only moves down.

Skew is flagged when the node's clock and the gateway's disagree by more than
``skew_limit_ms``:
- uptime nodes: the estimate had to move down by more than the limit (the node
  clock runs fast), or the smallest delay among the last ``window`` messages
  exceeds the limit (every recent message looks late: the node clock runs slow);
- wall-clock nodes: their timestamp is ahead of the receive time by more than the
  limit, or behind it by more than 60 times the limit (resends arrive late, so
  lateness gets more room than earliness).
Pure logic: the caller passes the receive time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from gateway.models import TimeBase


@dataclass
class NodeClock:
    skew_limit_ms: int
    window: int = 32
    offset_ms: int | None = None
    skewed: bool = False
    _recent_delays: deque[int] = field(default_factory=deque)

    def to_wall_ms(self, time_base: TimeBase, node_t: int, rx_ms: int) -> int:
        """Wall time for a node timestamp of a message received at ``rx_ms``."""
        if time_base is TimeBase.UNIX_MS:
            delay = rx_ms - node_t
            self.skewed = delay < -self.skew_limit_ms or delay > self.skew_limit_ms * 60
            return node_t
        observed = rx_ms - node_t
        if self.offset_ms is None or observed < self.offset_ms:
            if self.offset_ms is not None and self.offset_ms - observed > self.skew_limit_ms:
                self.skewed = True
            self.offset_ms = observed
        self._recent_delays.append(observed - self.offset_ms)
        if len(self._recent_delays) > self.window:
            self._recent_delays.popleft()
            if min(self._recent_delays) > self.skew_limit_ms:
                self.skewed = True
        return node_t + self.offset_ms

    @property
    def last_delay_ms(self) -> int:
        """How late the newest message arrived relative to the clock estimate."""
        return self._recent_delays[-1] if self._recent_delays else 0
