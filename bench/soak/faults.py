"""The faults the soak injects, each one applied and healed in turn.

Every fault is a coroutine that breaks one thing, waits, and repairs it; the scheduler
runs them one after another, in a seeded shuffled order, with a short random pause
between. Where a fault can leave a delivery to the store unclear (the gateway killed, or
the store stopped, while a batch may be in flight), the batch that may be sent again is
recorded (:func:`in_flight_window`) so the checker can tell a resend from a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.soak.stack import BATCH_MAX_POINTS, RAW_CHANNEL, Stack
from firmware_tools.sim.ble_link import BleLink
from firmware_tools.sim.serial_link import PtySerialLink

_LOGGER = logging.getLogger(__name__)

FAULT_KINDS = (
    "gateway_kill9",
    "broker_restart",
    "store_restart",
    "serial_unplug",
    "ble_drop",
    "budget_fill",
    "disk_full",
)

Identity = tuple[str, int]  # (node, timestamp ms) of a raw point


@dataclass
class FaultLog:
    events: list[tuple[float, str, float]] = field(default_factory=list)  # (t, kind, seconds)
    resendable: set[Identity] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)

    def count(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, kind, _ in self.events:
            out[kind] = out.get(kind, 0) + 1
        return out


def parse_raw_line(line: bytes) -> Identity | None:
    """(node, ts_ms) of a ``fieldgate_raw`` line of channel ``RAW_CHANNEL``, else None."""
    text = line.decode()
    head, _, rest = text.partition(" ")
    if not head.startswith("fieldgate_raw,"):
        return None
    tags = dict(kv.split("=", 1) for kv in head.split(",")[1:])
    if tags.get("channel") != RAW_CHANNEL:
        return None
    return tags["node"], int(rest.rsplit(" ", 1)[1])


def in_flight_window(backlog: Path) -> set[Identity]:
    """Raw points of the next batch after the checkpoint: what a resend may repeat."""
    if not backlog.exists():
        return set()
    db = sqlite3.connect(f"file:{backlog}?mode=ro", uri=True, timeout=10)
    try:
        (through,) = db.execute("SELECT coalesce(max(through_id), 0) FROM checkpoints").fetchone()
        rows = db.execute(
            "SELECT line FROM points WHERE id > ? ORDER BY id LIMIT ?",
            (through, BATCH_MAX_POINTS),
        ).fetchall()
    except sqlite3.Error as exc:
        _LOGGER.warning("cannot read the backlog's window: %s", exc)
        return set()
    finally:
        db.close()
    return {ident for (line,) in rows if (ident := parse_raw_line(bytes(line))) is not None}


class Faults:
    def __init__(
        self,
        stack: Stack,
        log: FaultLog,
        rng: random.Random,
        *,
        disk: bool,
        only: frozenset[str] | None = None,
    ) -> None:
        self.stack = stack
        self.log = log
        self.rng = rng
        self.kinds: dict[str, Callable[[], Awaitable[float]]] = {
            "gateway_kill9": self.gateway_kill9,
            "broker_restart": self.broker_restart,
            "store_restart": self.store_restart,
            "serial_unplug": self.serial_unplug,
            "ble_drop": self.ble_drop,
            "budget_fill": self.budget_fill,
        }
        if disk:
            self.kinds["disk_full"] = self.disk_full
        else:
            log.skipped.add("disk_full")
        if only is not None:
            # A run without kill -9 keeps one gateway process for the whole soak, so its RSS
            # and fd growth are measured over hours instead of one ~2-minute life.
            for kind in set(self.kinds) - only:
                del self.kinds[kind]
                log.skipped.add(kind)

    async def run(self, until: float, pause_s: tuple[float, float] = (2.0, 5.0)) -> None:
        """Inject faults until ``time.monotonic() >= until`` (the one running finishes)."""
        order: list[str] = []
        if not self.kinds:
            await asyncio.sleep(max(0.0, until - time.monotonic()))
            return
        while time.monotonic() < until:
            if not order:
                order = list(self.kinds)
                self.rng.shuffle(order)
            kind = order.pop()
            t0 = time.monotonic()
            _LOGGER.info("fault: %s", kind)
            seconds = await self.kinds[kind]()
            self.log.events.append((t0, kind, seconds))
            await asyncio.sleep(self.rng.uniform(*pause_s))

    async def _snapshot(self) -> None:
        window = await asyncio.to_thread(in_flight_window, self.stack.backlog)
        self.log.resendable |= window

    # -- the faults (each returns how long the thing was broken) ------------------------------

    async def gateway_kill9(self) -> float:
        gw = self.stack.gateway
        await gw.running.wait()
        await asyncio.sleep(self.rng.uniform(0, 1.0))
        t0 = time.monotonic()
        if gw.kill9():
            await gw.exited.wait()
            await self._snapshot()
        await gw.running.wait()  # the supervisor restarts it after 1 s
        return time.monotonic() - t0

    async def broker_restart(self) -> float:
        down = self.rng.uniform(2.0, 6.0)
        await asyncio.to_thread(self.stack.broker.stop)
        await asyncio.sleep(down)
        await asyncio.to_thread(self.stack.broker.start)
        return down

    async def _store_down(self, down: float) -> float:
        await asyncio.to_thread(self.stack.vm.stop)
        await self._snapshot()
        await asyncio.sleep(down)
        await asyncio.to_thread(self.stack.vm.start)
        return down

    async def store_restart(self) -> float:
        return await self._store_down(self.rng.uniform(2.0, 6.0))

    async def budget_fill(self) -> float:
        """The store down long enough for raw points to pass ``raw_bytes`` (oldest evicted)."""
        return await self._store_down(30.0)

    async def serial_unplug(self) -> float:
        node = self.rng.choice(self.stack.serial_nodes)
        link = self.stack.node(node).link
        assert isinstance(link, PtySerialLink)
        down = self.rng.uniform(1.0, 5.0)
        link.unplug()
        await asyncio.sleep(down)
        link.replug()
        return down

    async def ble_drop(self) -> float:
        node = self.rng.choice(self.stack.ble_nodes)
        link = self.stack.node(node).link
        assert isinstance(link, BleLink)
        t0 = time.monotonic()
        if link.peripheral is not None and link.peripheral.connected:
            await link.peripheral.disconnect()
        # The gateway reconnects on its own; the fault lasts until it has.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if link.peripheral is not None and link.peripheral.connected:
                break
        return time.monotonic() - t0

    async def disk_full(self) -> float:
        down = self.rng.uniform(3.0, 8.0)
        filler = self.stack.data_dir.parent / "filler"
        await asyncio.to_thread(fill_disk, filler)
        await asyncio.sleep(down)
        with contextlib.suppress(FileNotFoundError):
            filler.unlink()
        return down


def fill_disk(filler: Path) -> None:
    """Write ``filler`` until the filesystem has no block left."""
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        size = 1 << 20
        while size >= 512:
            try:
                os.write(fd, b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                size //= 2
    finally:
        os.close(fd)
