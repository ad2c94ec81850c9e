"""The node gate: whether a message for node A may enter the journal, decided before it does.

Three checks, in the source adapters, before anything is stored, acknowledged, scored or
alerted on (invariant "Trust is earned, state is bounded"):

1. **Pin**: a node pinned to a channel (a serial port, a BLE address, the broker) is accepted
   only from that channel. Anything else is refused, counted and raised as the
   ``node_identity`` system alert (cleared after a quiet period).
2. **Registry cap**: at most ``nodes.max_nodes`` node ids are admitted; a new id beyond that
   is refused (``node_registry_full`` alert) and counted together with the rest.
3. **Admission rate**: at most ``nodes.new_per_minute`` new ids a minute (a token bucket
   holding one minute's worth). A refused message is not acknowledged, so a real node is
   admitted when it sends again; made-up ids only cost a counter.

Nodes named in ``allowed_nodes`` or in ``nodes.pins`` are trusted by configuration: never
rate-limited, never refused for the cap. Every structure here is bounded by the cap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

from gateway.alerts.system import SystemAlert
from gateway.events import AlertEvent, Severity
from gateway.identity.config import NodesConfig
from gateway.identity.pins import PinStore
from gateway.log_limit import LimitedWarning

_LOGGER = logging.getLogger(__name__)

REGISTRY_FULL = "registry_full"
ADMISSION_RATE = "admission_rate"
PIN_MISMATCH = "pin_mismatch"
_REFRESH_EVERY_S = 1.0


class NodeGate:
    """Shared by every source; runs on the event loop (``run`` saves learned pins)."""

    def __init__(
        self,
        config: NodesConfig,
        pins: PinStore,
        *,
        allowed: frozenset[str] = frozenset(),
        alert_sink: Callable[[AlertEvent], None] | None = None,
        quiet_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._pins = pins
        self._trusted = allowed | frozenset(config.pins)
        self._clock = clock
        self._quiet_s = quiet_s
        self._known: set[str] = set()
        self._tokens = float(config.new_per_minute)
        self._refilled_at = clock()
        self._refreshed_at = float("-inf")
        self.refused: Counter[str] = Counter()  # by reason, never by id
        self._mismatch_logged: set[str] = set()  # pinned nodes only: bounded by the cap
        self._log = LimitedWarning(_LOGGER)
        self._last_trouble = {PIN_MISMATCH: float("-inf"), REGISTRY_FULL: float("-inf")}
        sink = alert_sink or (lambda _event: None)
        self.alerts = {
            PIN_MISMATCH: SystemAlert("node_identity", sink, Severity.CRITICAL),
            REGISTRY_FULL: SystemAlert("node_registry_full", sink, Severity.WARNING),
        }
        self._save_wanted = asyncio.Event()

    # -- start-up --------------------------------------------------------------------------

    def seed(self, nodes: Iterable[str]) -> None:
        """Admit the nodes the journal already knows (newest first; at most the cap)."""
        for node_id in nodes:
            if len(self._known) >= self._config.max_nodes:
                break
            self._known.add(node_id)

    @property
    def admitted(self) -> int:
        return len(self._known)

    def refused_for(self, reason: str) -> Callable[[], float]:
        """A metrics callback: messages refused for ``reason`` so far."""
        return lambda: float(self.refused[reason])

    def is_admitted(self, node_id: str) -> bool:
        return node_id in self._known or node_id in self._trusted

    # -- the check -------------------------------------------------------------------------

    def admit(self, node_id: str, channel: str) -> bool:
        """True when a message for ``node_id`` that came over ``channel`` may enter."""
        pinned = self._pins.channel_of(node_id)
        if pinned is not None and pinned != channel:
            if not self._refresh():
                return self._mismatch(node_id, pinned, channel)
            pinned = self._pins.channel_of(node_id)  # `fieldgate nodes unpin` may have run
            if pinned is not None and pinned != channel:
                return self._mismatch(node_id, pinned, channel)
        new = node_id not in self._known and node_id not in self._trusted
        if new and not self._admit_new(node_id, channel):
            return False
        if pinned is None and self._config.learn_pins:
            self._pins.learn(node_id, channel)
            self._save_wanted.set()
            _LOGGER.info("%s: pinned to %s (first contact)", node_id, channel)
        return True

    def _admit_new(self, node_id: str, channel: str) -> bool:
        if len(self._known) >= self._config.max_nodes:
            self._refuse(REGISTRY_FULL)
            self._log.warning(
                "%s: new node on %s refused: the registry holds nodes.max_nodes = %d nodes",
                node_id,
                channel,
                self._config.max_nodes,
            )
            self.alerts[REGISTRY_FULL].raise_(
                f"the node registry is full ({self._config.max_nodes} nodes): new nodes are "
                "refused. Raise nodes.max_nodes, or list the site's nodes in allowed_nodes"
            )
            return False
        now = self._clock()
        per_s = self._config.new_per_minute / 60.0
        self._tokens = min(
            float(self._config.new_per_minute), self._tokens + (now - self._refilled_at) * per_s
        )
        self._refilled_at = now
        if self._tokens < 1.0:
            self._refuse(ADMISSION_RATE)
            self._log.warning(
                "%s: new node on %s refused for now: more than nodes.new_per_minute = %d new "
                "nodes a minute (it is admitted when it sends again)",
                node_id,
                channel,
                self._config.new_per_minute,
            )
            return False
        self._tokens -= 1.0
        self._known.add(node_id)
        return True

    def _mismatch(self, node_id: str, pinned: str, channel: str) -> bool:
        self._refuse(PIN_MISMATCH)
        if node_id not in self._mismatch_logged:
            self._mismatch_logged.add(node_id)
            _LOGGER.warning(
                "%s: message from %s refused: the node is pinned to %s (if it really moved, "
                "run `fieldgate nodes unpin %s`)",
                node_id,
                channel,
                pinned,
                node_id,
            )
        else:
            self._log.warning(
                "%s: message from %s refused (pinned to %s)", node_id, channel, pinned
            )
        self.alerts[PIN_MISMATCH].raise_(
            f"{node_id}: a message came from {channel} but the node is pinned to {pinned}: "
            "refused. Someone may be impersonating it; if it was moved on purpose, run "
            f"`fieldgate nodes unpin {node_id}`"
        )
        return False

    def _refuse(self, reason: str) -> None:
        self.refused[reason] += 1
        if reason in self._last_trouble:
            self._last_trouble[reason] = self._clock()

    def _refresh(self) -> bool:
        now = self._clock()
        if now - self._refreshed_at < _REFRESH_EVERY_S:
            return False
        self._refreshed_at = now
        return self._pins.refresh()

    # -- background: persist learned pins, clear quiet alerts --------------------------------

    async def run(self, tick_s: float = 1.0) -> None:
        while True:
            try:
                async with asyncio.timeout(tick_s):
                    await self._save_wanted.wait()
            except TimeoutError:
                pass
            self._save_wanted.clear()
            if self._pins.dirty:
                snapshot = self._pins.snapshot()
                try:
                    await asyncio.to_thread(self._pins.save, snapshot)
                except OSError as exc:
                    # The pins stay in memory; the next learn or tick tries again.
                    self._log.warning("node pins: cannot write %s: %s", self._pins.path, exc)
                else:
                    self._pins.saved(snapshot)
            self.clear_quiet_alerts()

    def clear_quiet_alerts(self) -> None:
        """Clear an alert whose condition was not seen for ``quiet_s``."""
        now = self._clock()
        for reason, alert in self.alerts.items():
            if alert.current is not None and now - self._last_trouble[reason] >= self._quiet_s:
                alert.clear()
                if reason == PIN_MISMATCH:
                    self._mismatch_logged.clear()  # a new episode is logged again
