"""Drive one node's logic in real time: sample on schedule, poll timers, move messages.

:class:`SimNode` is the only place where the simulated node meets a clock. It
reads samples from a signal source at the times the source gives, hands the
resulting messages to the node's link, and feeds downlink messages back into the
node logic. It also keeps the ground truth (which fault each transmitted sample
showed, keyed by ``(boot_id, seq)``) so tests and benchmarks can score alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from firmware_tools.sim.links import Link
from firmware_tools.sim.node import NodeLogic
from firmware_tools.sim.signals import LabelledSample, SignalSource
from gateway.protocol.messages import DownlinkMessage, ReadingBatch, UplinkMessage

_LOGGER = logging.getLogger(__name__)

# Bound on remembered labels: at 10 Hz, over a day of simulation.
_GROUND_TRUTH_MAX = 1_000_000


@dataclass(frozen=True, slots=True)
class TruthRecord:
    """The ground truth of one transmitted sample."""

    boot_id: int
    seq: int
    t_ms: int  # simulation time it was taken
    label: int


class SimNode:
    """One running node: logic + signal + link."""

    def __init__(
        self,
        logic: NodeLogic,
        source: SignalSource,
        link: Link,
        *,
        clock_ms: Callable[[], int],
    ) -> None:
        self.logic = logic
        self.source = source
        self.link = link
        self._clock_ms = clock_ms
        self._wake = asyncio.Event()
        self._pending_labels: list[tuple[int, int]] = []  # (t_ms, label) of unbatched samples
        self.ground_truth: deque[TruthRecord] = deque(maxlen=_GROUND_TRUTH_MAX)
        self._truth_mark: tuple[int, int] | None = None  # (boot_id, seq) of the last fresh batch
        self._stopping = False
        self.samples_taken = 0
        self.finished = False  # the source ran out (a replay without loop)

    @property
    def node_id(self) -> str:
        return self.logic.node_id

    def stats(self) -> dict[str, int]:
        """Node counters plus the link's (prefixed ``link_``)."""
        out = self.logic.stats.as_dict()
        out.update({f"link_{k}": v for k, v in self.link.stats.as_dict().items()})
        out["unacked"] = len(self.logic.unacked)
        out["samples_taken"] = self.samples_taken
        return out

    def reboot(self) -> None:
        """Power-cycle the node now (its RAM is lost; the link stays as it is)."""
        self.logic.reboot(self._clock_ms())
        self._pending_labels.clear()
        self._wake.set()

    def labels_by_seq(self) -> dict[tuple[int, int], int]:
        """``(boot_id, seq) -> label`` of every sample sent so far."""
        return {(r.boot_id, r.seq): r.label for r in self.ground_truth}

    def stop(self) -> None:
        """Ask :meth:`run` to finish: it stops sampling and closes the link."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Run until :meth:`stop` (or cancellation), then close the link."""
        async with asyncio.TaskGroup() as tg:
            link_task = tg.create_task(
                self.link.run(self._on_downlink), name=f"sim:{self.node_id}:link:{self.link.kind}"
            )
            try:
                await self._loop()
            finally:
                link_task.cancel()

    # -- internals -------------------------------------------------------------------------

    async def _loop(self) -> None:
        samples: Iterator[LabelledSample] = iter(self.source)
        upcoming = next(samples, None)
        start_ms = self._clock_ms()
        while not self._stopping:
            now = self._clock_ms()
            while upcoming is not None and start_ms + upcoming.t_s * 1000 <= now:
                # Stamp with the scheduled time, not the (late) wake-up time: a node's ADC
                # is clocked, its timestamps do not jitter with our event loop.
                taken_ms = start_ms + round(upcoming.t_s * 1000)
                self._pending_labels.append((taken_ms, upcoming.label))
                self._send(self.logic.add_sample(taken_ms, upcoming.values))
                self.samples_taken += 1
                upcoming = next(samples, None)
            if upcoming is None and not self.finished:
                self.finished = True
                _LOGGER.info("%s: signal source exhausted", self.node_id)
            self._send(self.logic.poll(now))

            deadline = self.logic.next_deadline_ms()
            if upcoming is not None:
                deadline = min(deadline, start_ms + round(upcoming.t_s * 1000))
            delay_s = max(0.0, (deadline - self._clock_ms()) / 1000)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self._wake.wait()

    def _send(self, msgs: list[UplinkMessage]) -> None:
        for msg in msgs:
            if isinstance(msg, ReadingBatch):
                self._record_truth(msg)
            self.link.offer(msg)

    def _record_truth(self, batch: ReadingBatch) -> None:
        mark = self._truth_mark
        if mark is not None and batch.boot_id == mark[0] and batch.seq <= mark[1]:
            return  # a resend: its labels are recorded already
        self._truth_mark = (batch.boot_id, batch.seq)
        # A fresh batch takes exactly the pending samples, oldest first.
        n = len(batch.samples)
        taken, self._pending_labels = self._pending_labels[:n], self._pending_labels[n:]
        for i, (t_ms, label) in enumerate(taken):
            self.ground_truth.append(TruthRecord(batch.boot_id, batch.seq + i, t_ms, label))

    def _on_downlink(self, msg: DownlinkMessage) -> None:
        replies = self.logic.handle(msg, self._clock_ms())
        self._send(replies)
        self._wake.set()  # a reboot or new threshold changes the timers
