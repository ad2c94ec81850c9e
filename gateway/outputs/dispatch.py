"""AlertOutputs: one alert event in, every configured output served.

``deliver(event)`` never blocks and never waits for the network (invariant "The local
path never waits for the network"): it publishes to the in-process bus and hands the event
to each output's own bounded buffer or to the durable outbox. ``run()`` owns the outputs' tasks in one
TaskGroup; cancelling it shuts them down (the outbox commits what it accepted first).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.alerts.system import SystemAlert
from gateway.events import AlertEvent, Severity
from gateway.outputs.bus import AlertBus
from gateway.outputs.config import OutputsConfig
from gateway.outputs.node_action import CommandSender, NodeActions
from gateway.outputs.outbox import Destination, Outbox
from gateway.outputs.payload import encode_event
from gateway.outputs.script_hook import ScriptHook

if TYPE_CHECKING:
    from gateway.outputs.local_mqtt import LocalMqttOutput

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutputsStatus:
    """Counters for the dashboard, the live view and metrics."""

    delivered_events: int
    bus_subscribers: int
    bus_dropped: int
    mqtt_connected: bool | None  # None: local MQTT disabled
    mqtt_published: int
    mqtt_buffered: int
    mqtt_dropped: int
    commands_sent: int
    commands_failed: int
    scripts_succeeded: int
    scripts_failed: int
    scripts_timed_out: int
    outbox_online: dict[str, bool] = field(default_factory=dict)
    outbox_delivered: dict[str, int] = field(default_factory=dict)
    outbox_failures: dict[str, int] = field(default_factory=dict)
    outbox_rejected: dict[str, int] = field(default_factory=dict)


class AlertOutputs:
    def __init__(
        self,
        config: OutputsConfig,
        bus: AlertBus,
        sender: CommandSender | None,
        data_dir: Path,
        *,
        site: str,
    ) -> None:
        self._config = config
        self._site = site
        self.bus = bus
        # The optional outputs are imported only when enabled: aiomqtt (and paho), smtplib
        # and the HTTP client stay out of a gateway that does not use them.
        self.local_mqtt: LocalMqttOutput | None = None
        if config.local_mqtt.enabled:
            from gateway.outputs.local_mqtt import LocalMqttOutput

            self.local_mqtt = LocalMqttOutput(config.local_mqtt, site)
        self.node_actions = NodeActions(config.node_actions, sender)
        self.script_hook = (
            ScriptHook(config.script_hook, site) if config.script_hook.enabled else None
        )
        destinations: list[Destination] = []
        if config.webhook.enabled:
            from gateway.outputs.webhook import WebhookDestination

            destinations.append(WebhookDestination(config.webhook))
        if config.email.enabled:
            from gateway.outputs.email import EmailDestination

            destinations.append(EmailDestination(config.email))
        self.outbox = (
            Outbox(
                config.outbox_path(data_dir),
                destinations,
                retry_first_s=config.outbox.retry_first_s,
                retry_max_s=config.outbox.retry_max_s,
                queue_max_events=config.outbox.queue_max_events,
                max_bytes=config.outbox.max_bytes,
                on_full=self._outbox_full,
                on_fault=self._outbox_fault,
            )
            if destinations
            else None
        )
        self.delivered_events = 0
        # Raised on the outputs that need no outbox (bus, local MQTT, script hook) and, being
        # an alert, taken by the outbox too.
        self.outbox_full_alert = SystemAlert("outbox_full", self.deliver, Severity.WARNING)
        self.outbox_storage_alert = SystemAlert("outbox_storage", self.deliver)

    def _outbox_fault(self, fault: str | None) -> None:
        if fault is None:
            self.outbox_storage_alert.clear()
        else:
            self.outbox_storage_alert.raise_(
                f"the notification outbox cannot write ({fault}): webhook and e-mail "
                "notifications wait in memory until the disk has room"
            )

    def _outbox_full(self, full: bool) -> None:
        if not full:
            self.outbox_full_alert.clear()
            return
        self.outbox_full_alert.raise_(
            "the notification outbox is over outputs.outbox.max_bytes (webhook or e-mail "
            "unreachable for long?): cleared, acknowledged and re-notified events are not "
            "sent on; raised and escalated alerts still are"
        )

    def deliver(self, event: AlertEvent) -> None:
        """Fan ``event`` out to every output; returns at once (no I/O on the caller)."""
        self.delivered_events += 1
        self.bus.publish(event)
        body = encode_event(event, self._site)
        if self.local_mqtt is not None:
            self.local_mqtt.offer(event, body)
        self.node_actions.offer(event)
        if self.script_hook is not None:
            self.script_hook.offer(event, body)
        if self.outbox is not None:
            self.outbox.put(event, body)

    async def run(self) -> None:
        """Run every enabled output until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                if self.local_mqtt is not None:
                    tg.create_task(self.local_mqtt.run(), name=self.local_mqtt.name)
                if self._config.node_actions.actions:
                    tg.create_task(self.node_actions.run(), name="output:node_actions")
                if self.script_hook is not None:
                    tg.create_task(self.script_hook.run(), name="output:script_hook")
                if self.outbox is not None:
                    tg.create_task(self.outbox.run(), name="output:outbox")
                # Keeps run() alive when no output task is configured.
                await asyncio.get_running_loop().create_future()
        finally:
            self.bus.close()

    def status(self) -> OutputsStatus:
        mqtt, hook, outbox = self.local_mqtt, self.script_hook, self.outbox
        return OutputsStatus(
            delivered_events=self.delivered_events,
            bus_subscribers=self.bus.subscribers,
            bus_dropped=self.bus.dropped,
            mqtt_connected=None if mqtt is None else mqtt.connected.is_set(),
            mqtt_published=0 if mqtt is None else mqtt.published,
            mqtt_buffered=0 if mqtt is None else mqtt.buffered,
            mqtt_dropped=0 if mqtt is None else mqtt.dropped,
            commands_sent=self.node_actions.sent,
            commands_failed=self.node_actions.failed + self.node_actions.dropped,
            scripts_succeeded=0 if hook is None else hook.succeeded,
            scripts_failed=0 if hook is None else hook.failed + hook.dropped,
            scripts_timed_out=0 if hook is None else hook.timed_out,
            outbox_online={} if outbox is None else dict(outbox.online),
            outbox_delivered={} if outbox is None else dict(outbox.delivered),
            outbox_failures={} if outbox is None else dict(outbox.failures),
            outbox_rejected={} if outbox is None else dict(outbox.rejected),
        )
