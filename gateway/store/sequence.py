"""Per-(node, boot) sequence accounting: what is durable, what is a duplicate, what is lost.

Pure logic, no I/O. The journal feeds it the seq ranges it has just committed and
asks it which cumulative ``Ack`` each node may be sent (invariant "Acknowledged means durable"):
``acked`` only ever covers seqs that are committed, or that the node itself told us
are gone for good (counted as a gap, never invented).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StreamState:
    """Sequence bookkeeping for one boot of one node."""

    node_id: str
    boot_id: int
    # Every seq <= acked is committed or known lost; it is what we acknowledge.
    acked: int = 0
    # Committed seqs above ``acked`` (arrived out of order, waiting for a hole to fill).
    ahead: set[int] = field(default_factory=set)
    highest_seen: int = 0
    lost: int = 0  # seqs the node gave up on (buffer overflow or reboot): a gap, counted
    received: int = 0  # distinct seqs committed
    duplicates: int = 0

    def commit(self, first: int, last: int) -> None:
        """Record that seqs ``first..last`` (inclusive) are now durable."""
        self.highest_seen = max(self.highest_seen, last)
        if first <= self.acked + 1:
            self.acked = max(self.acked, last)
        else:
            self.ahead.update(range(first, last + 1))
        self._absorb()

    def give_up_below(self, oldest_held: int) -> int:
        """The node holds nothing below ``oldest_held``; count what never arrived as lost.

        ``oldest_held`` is clamped to one past the highest seq seen: a node cannot hold back
        what it never sent, so a claim beyond that (a bug or a forged Status) must not move
        the ack past data the node may still resend. The work is proportional to the seqs
        waiting out of order (``ahead``, bounded by the seq window), never to the size of the
        claimed jump. Returns how many seqs became a gap now.
        """
        oldest_held = min(oldest_held, self.highest_seen + 1)
        if oldest_held <= self.acked + 1:
            return 0
        below = [s for s in self.ahead if s < oldest_held]
        newly_lost = oldest_held - self.acked - 1 - len(below)
        self.ahead.difference_update(below)
        self.lost += newly_lost
        self.acked = oldest_held - 1
        self._absorb()
        return newly_lost

    def is_jump(self, first: int, window: int) -> bool:
        """True when ``first`` lies more than ``window`` seqs past anything seen in this boot.

        A node's seqs grow by one per message; a jump that large is a forged or corrupted
        message, and storing it would make the node's real data look old or duplicated.
        The first message of a boot sets where the stream starts, so it is never a jump.
        """
        return self.highest_seen > 0 and first > self.highest_seen + window

    def close(self) -> int:
        """The node rebooted: whatever is still missing in this boot is lost. Returns the count."""
        missing = self.highest_seen - self.acked - len(self.ahead)
        self.lost += missing
        self.acked = self.highest_seen
        self.ahead.clear()
        return missing

    @property
    def pending_gap(self) -> int:
        """Seqs not yet received below the highest seen (may still arrive by resend)."""
        return self.highest_seen - self.acked - len(self.ahead)

    def _absorb(self) -> None:
        while self.acked + 1 in self.ahead:
            self.acked += 1
            self.ahead.discard(self.acked)
