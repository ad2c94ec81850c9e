"""Node status changes as events: what of a node's Status heartbeats goes upstream.

A heartbeat every few seconds per node would cost more uplink than all its summaries, so a
Status becomes an event only when it says something new: a reboot (boot id), other firmware,
another active model, battery down or up by ``battery_step_mv``, RSSI by ``rssi_step_db``,
or when the node's last event is older than ``keepalive_ms``. Bounded: one entry per node,
at most ``max_nodes`` (the least recently heard forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from gateway.forward.points import NODE_STATUS, FieldValue, Point, point
from gateway.protocol.messages import Status


class _Sent(NamedTuple):
    at_ms: int
    boot_id: int
    firmware: str
    model: str
    battery_mv: int | None
    rssi_dbm: int | None


def _active_model(msg: Status) -> str:
    for slot in msg.slots:
        if slot.active:
            return f"{slot.model_id}@{slot.model_version}"
    return ""


class StatusEvents:
    def __init__(
        self,
        site: str,
        *,
        battery_step_mv: int = 50,
        rssi_step_db: int = 10,
        keepalive_ms: int = 3_600_000,
        max_nodes: int = 10_000,
    ) -> None:
        self.site = site
        self.battery_step_mv = battery_step_mv
        self.rssi_step_db = rssi_step_db
        self.keepalive_ms = keepalive_ms
        self.max_nodes = max_nodes
        self._sent: OrderedDict[str, _Sent] = OrderedDict()
        self.suppressed = 0  # heartbeats that said nothing new

    def __len__(self) -> int:
        """Nodes tracked."""
        return len(self._sent)

    def offer(self, msg: Status, wall_ms: int, rssi_dbm: int | None = None) -> Point | None:
        """The event for ``msg``, or None when it changes nothing worth sending."""
        rssi = msg.rssi_dbm if msg.rssi_dbm is not None else rssi_dbm
        now = _Sent(
            wall_ms, msg.boot_id, msg.firmware_version, _active_model(msg), msg.battery_mv, rssi
        )
        before = self._sent.get(msg.node_id)
        if before is not None and not self._changed(before, now):
            self._sent.move_to_end(msg.node_id)
            self.suppressed += 1
            return None
        self._sent[msg.node_id] = now
        self._sent.move_to_end(msg.node_id)
        while len(self._sent) > self.max_nodes:
            self._sent.popitem(last=False)
        fields: dict[str, FieldValue] = {"uptime_s": msg.uptime_ms / 1000.0, "boot_id": msg.boot_id}
        for name, value in (("battery_mv", msg.battery_mv), ("rssi_dbm", rssi),
                            ("free_ram_bytes", msg.free_ram_bytes)):  # fmt: skip
            if value is not None:
                fields[name] = value
        tags = {
            "site": self.site,
            "node": msg.node_id,
            "firmware": now.firmware,
            "model": now.model,
        }
        return point(NODE_STATUS, tags, fields, wall_ms)

    def _changed(self, before: _Sent, now: _Sent) -> bool:
        if (before.boot_id, before.firmware, before.model) != (
            now.boot_id,
            now.firmware,
            now.model,
        ):
            return True
        if now.at_ms - before.at_ms >= self.keepalive_ms:
            return True
        return _moved(before.battery_mv, now.battery_mv, self.battery_step_mv) or _moved(
            before.rssi_dbm, now.rssi_dbm, self.rssi_step_db
        )


def _moved(before: int | None, now: int | None, step: int) -> bool:
    if before is None or now is None:
        return before != now
    return abs(now - before) >= step
