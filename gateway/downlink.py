"""The downlink router: send a :class:`~gateway.protocol.messages.Command` to a node over whichever
link currently reaches it.

Sources register their per-node links as they learn them (a serial port once a node's
first message on it is committed, a BLE connection once it is subscribed, the MQTT
connection once a node's first message over it is committed) and withdraw them when the
link goes (port closed, BLE disconnect, broker connection lost). A node that moved
transports is reached over the link registered last.

:meth:`Downlinks.send_command` never blocks: it hands the command to the link, whose own
writer task frames and writes it (serial: a COBS frame; BLE: chunks written to DOWNLINK;
MQTT: a QoS 1 publish to ``fieldgate/<site>/<node>/cmd``). Delivery is at most once from
here: a link that drops before writing loses the command, and the caller (an alert
output) decides whether to send again. ``cmd_id`` lets the node ignore a repeat.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Protocol

from gateway.protocol.messages import Command

_LOGGER = logging.getLogger(__name__)


class CommandLink(Protocol):
    """A live way to one or more nodes, owned by a source."""

    @property
    def name(self) -> str:
        """For logs: ``source:serial:/dev/ttyACM0``, ``source:ble:pump-01``, ..."""

    def send_command(self, command: Command) -> bool:
        """Queue ``command`` for writing without blocking; False if the link cannot take it
        (gone, or its bounded command queue is full)."""


class Downlinks:
    """Node id -> the link that reaches it now. One per gateway, shared by all sources."""

    def __init__(self) -> None:
        self._links: dict[str, CommandLink] = {}
        self.sent: Counter[str] = Counter()  # per node, commands handed to a link
        self.failed: Counter[str] = Counter()  # per node, no live link or link refused

    def register(self, node_id: str, link: CommandLink) -> None:
        """``link`` reaches ``node_id`` from now on (replacing any other link)."""
        previous = self._links.get(node_id)
        self._links[node_id] = link
        if previous is not link:
            _LOGGER.info("%s: downlink via %s", node_id, link.name)

    def unregister(self, node_id: str, link: CommandLink) -> None:
        """``link`` no longer reaches ``node_id``; a newer link registered since is kept."""
        if self._links.get(node_id) is link:
            del self._links[node_id]

    def unregister_link(self, link: CommandLink) -> None:
        """Withdraw ``link`` for every node it reaches (its connection went down)."""
        for node_id in [n for n, lk in self._links.items() if lk is link]:
            del self._links[node_id]

    def link_for(self, node_id: str) -> CommandLink | None:
        return self._links.get(node_id)

    def nodes(self) -> dict[str, str]:
        """``node_id -> link name`` of every node reachable now."""
        return {node: link.name for node, link in self._links.items()}

    def send_command(self, command: Command) -> bool:
        """Hand ``command`` to the node's live link; False (logged, counted) if there is none
        or the link's queue is full. True means queued for writing, not yet delivered."""
        node_id = command.node_id
        link = self._links.get(node_id)
        if link is None:
            self.failed[node_id] += 1
            _LOGGER.warning(
                "%s: command %d (%s) not sent: no live link to this node",
                node_id,
                command.cmd_id,
                command.kind.name,
            )
            return False
        if not link.send_command(command):
            self.failed[node_id] += 1
            _LOGGER.warning(
                "%s: command %d (%s) not sent: %s cannot take it now",
                node_id,
                command.cmd_id,
                command.kind.name,
                link.name,
            )
            return False
        self.sent[node_id] += 1
        return True


class LinkReach:
    """The nodes one connection of a source has registered with the router.

    Serial and MQTT sources register a node from their ack path, once per node and
    connection, not per message: a node is known to use the link once something of it is
    durable, and the receive path stays lean.
    """

    def __init__(self, downlinks: Downlinks | None, link: CommandLink) -> None:
        self._downlinks = downlinks
        self._link = link
        self._nodes: set[str] = set()

    def note(self, node_id: str) -> None:
        if node_id not in self._nodes:
            self._nodes.add(node_id)
            if self._downlinks is not None:
                self._downlinks.register(node_id, self._link)

    def forget_all(self) -> None:
        """The connection went down: withdraw it for every node it reached."""
        if self._downlinks is not None:
            self._downlinks.unregister_link(self._link)
        self._nodes.clear()
