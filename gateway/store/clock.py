"""Map node time onto gateway wall time.

Invariant "Time is the node's, within the gateway's bounds".

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
A timestamp ahead of the receive time by more than the limit is never used: it is
replaced by the receive time (a message cannot come from the future, and one stamped
years ahead would keep its node "alive" for years). A late one is kept, flagged beyond
the room: a resend after an outage is legitimately old. Uptime mapping never yields a
time after the receive time. Pure logic: the caller passes the receive time.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.protocol.messages import TimeBase


@dataclass
class NodeClock:
    skew_limit_ms: int
    window: int = 32
    offset_ms: int | None = None
    skewed: bool = False
    # "The last ``window`` delays all exceed the limit" is a run of late messages at least
    # that long, with more than ``window`` messages seen: two counters, no window to scan.
    _late_run: int = 0
    _seen: int = 0

    def to_wall_ms(self, time_base: TimeBase, node_t: int, rx_ms: int) -> int:
        """Wall time for a node timestamp of a message received at ``rx_ms``."""
        if time_base is TimeBase.UNIX_MS:
            delay = rx_ms - node_t
            ahead = delay < -self.skew_limit_ms
            self.skewed = ahead or delay > self.skew_limit_ms * 60
            return rx_ms if ahead else node_t
        observed = rx_ms - node_t
        offset = self.offset_ms
        if offset is None or observed < offset:
            if offset is not None and offset - observed > self.skew_limit_ms:
                self.skewed = True
            self.offset_ms = offset = observed
        self._seen += 1
        if observed - offset > self.skew_limit_ms:
            self._late_run += 1
            if self._late_run >= self.window and self._seen > self.window:
                self.skewed = True
        else:
            self._late_run = 0
        return node_t + offset

    def to_wall_ms_many(
        self, time_base: TimeBase, node_ts: list[int], rx_ms: int
    ) -> tuple[int, ...]:
        """:meth:`to_wall_ms` for each of ``node_ts`` in turn (the samples of one batch).

        The same steps as :meth:`to_wall_ms` with the state in locals: a 250-sample batch
        would otherwise spend more on method calls than on the arithmetic.
        """
        if time_base is TimeBase.UNIX_MS:
            return tuple([self.to_wall_ms(time_base, t, rx_ms) for t in node_ts])
        limit, window = self.skew_limit_ms, self.window
        offset, skewed, late_run, seen = self.offset_ms, self.skewed, self._late_run, self._seen
        out = []
        for node_t in node_ts:
            observed = rx_ms - node_t
            if offset is None or observed < offset:
                if offset is not None and offset - observed > limit:
                    skewed = True
                offset = observed
            seen += 1
            if observed - offset > limit:
                late_run += 1
                if late_run >= window and seen > window:
                    skewed = True
            else:
                late_run = 0
            out.append(node_t + offset)
        self.offset_ms, self.skewed, self._late_run, self._seen = offset, skewed, late_run, seen
        return tuple(out)
