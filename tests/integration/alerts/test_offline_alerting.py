"""Offline alerting, end to end through a real Gateway (issue 6, "Must show").

With the broker stopped and the uplink unreachable, a serial-fed simulated pump whose valve
closes twice raises and clears its alerts, and every local output serves them at once: the
in-process AlertBus, a script hook, and the node itself (an ACTUATE command back over the
same serial line). The webhook queues in the durable outbox; when its receiver comes up it
gets each event exactly once, in order. When the broker comes back, the local-MQTT alert
output delivers what it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from firmware_tools.sim.fleet import SimConfig, Simulator
from firmware_tools.sim.signals import Fault, FaultKind
from gateway.events import AlertEvent, AlertEventKind
from gateway.outputs.bus import Subscription
from tests.fixtures.gateway import gateway_config, running_gateway, wait_until
from tests.fixtures.servers import Mosquitto
from tests.integration.outputs.servers import WebhookReceiver

pytestmark = pytest.mark.timeout(60)

NODE = "pump-01"
RULE = "flow_low"
HOOK = """#!/bin/sh
cat > "$1/$FIELDGATE_EVENT_ID.json"
"""
# The valve closes twice: flow falls from ~125 to ~4 l/min, then recovers.
VALVE_FAULTS = (
    (NODE, Fault(FaultKind.VALVE_CLOSED, start_s=1.0, duration_s=1.5)),
    (NODE, Fault(FaultKind.VALVE_CLOSED, start_s=3.5, duration_s=1.5)),
)
EXPECTED_KINDS = [AlertEventKind.RAISED, AlertEventKind.CLEARED] * 2


def _hook(tmp_path: Path) -> Path:
    out = tmp_path / "hook-out"
    out.mkdir()
    path = tmp_path / "hook.sh"
    path.write_text(HOOK)
    path.chmod(0o755)
    return path


def _config(tmp_path: Path, broker: Mosquitto, site: str, pty: Path, webhook: WebhookReceiver):  # type: ignore[no-untyped-def]
    hook = _hook(tmp_path)
    return gateway_config(
        tmp_path,
        site=site,
        mqtt={
            "enabled": True,
            "url": broker.url,
            "client_id": f"gw-{site}",
            "reconnect_max_s": 0.5,
        },
        serial={"ports": [{"path": str(pty)}], "reopen_interval_s": 0.05},
        alerts={
            "use_default_rules": False,
            "rules": {
                RULE: {
                    "kind": "threshold",
                    "channel": "flow",
                    "below": 60.0,
                    "hysteresis": 5.0,
                    "severity": "critical",
                }
            },
        },
        outputs={
            "local_mqtt": {
                "enabled": True,
                "url": broker.url,
                "client_id": f"alerts-{site}",
                "reconnect_max_s": 0.5,
            },
            "node_actions": {
                "actions": [
                    {"rule": RULE, "command": "actuate", "args": {"output": "siren", "state": True}}
                ]
            },
            "script_hook": {
                "enabled": True,
                "path": str(hook),
                "args": [str(tmp_path / "hook-out")],
            },
            "webhook": {"enabled": True, "url": webhook.url, "timeout_s": 1},
            "outbox": {"retry_first_s": 0.05, "retry_max_s": 0.25},
        },
    )


@contextlib.asynccontextmanager
async def plc_listener(
    broker: Mosquitto, client_id: str, topic: str
) -> AsyncIterator[list[dict[str, Any]]]:
    """A PLC's persistent MQTT session: it gets what was published while it was away."""
    got: list[dict[str, Any]] = []
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=client_id, clean_session=False
    ) as client:
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                got.append(json.loads(message.payload))

        task = asyncio.create_task(collect(), name="test:plc")
        try:
            yield got
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _collect(sub: Subscription, into: list[AlertEvent]) -> None:
    async for item in sub:
        if isinstance(item, AlertEvent):
            into.append(item)


async def test_offline_alerts_reach_local_outputs_and_queued_notifications_arrive_once(
    tmp_path: Path, restartable_mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    broker = restartable_mosquitto
    topic = f"fieldgate/{mqtt_prefix}/alerts/#"
    plc_id = f"plc-{mqtt_prefix}"
    async with plc_listener(broker, plc_id, topic):
        pass  # the PLC's session (and subscription) now outlives its connection
    broker.stop()  # no broker from here on: the site's LAN switch, or the broker, is down
    webhook = WebhookReceiver()  # not listening: the uplink is unreachable

    pty_dir = tmp_path / "dev"
    cfg = _config(tmp_path, broker, mqtt_prefix, pty_dir / f"tty{NODE}", webhook)
    on_bus: list[AlertEvent] = []
    async with running_gateway(cfg, wait_sources=False) as gateway:
        collector = asyncio.create_task(
            _collect(gateway.alert_bus.subscribe(100), on_bus), name="test:bus"
        )
        sim_cfg = SimConfig(
            nodes=1, transports=("serial",), rate_hz=20.0, batch_size=2, faults=VALVE_FAULTS,
            pty_dir=pty_dir, resend_timeout_ms=500, status_interval_ms=60_000,
        )  # fmt: skip
        async with Simulator(sim_cfg) as sim:
            await wait_until(lambda: len(on_bus) >= 4, 20, "two raised and cleared alerts")
            await asyncio.sleep(0.3)  # nothing more should come
            assert [e.kind for e in on_bus] == EXPECTED_KINDS
            assert {(e.alert.rule, e.alert.node_id) for e in on_bus} == {(RULE, NODE)}
            ids = [e.event_id for e in on_bus]
            assert len(set(ids)) == 4

            # Local outputs, all while offline.
            hook_out = tmp_path / "hook-out"
            await wait_until(
                lambda: len(list(hook_out.glob("*.json"))) == 4, 10, "script hook per event"
            )
            hooked = {json.loads(p.read_text())["event_id"] for p in hook_out.glob("*.json")}
            assert hooked == set(ids)
            logic = sim.nodes[NODE].logic
            await wait_until(lambda: logic.stats.commands == 2, 10, "ACTUATE per raised alert")
            assert logic.outputs == {"siren": True}
            status = gateway.outputs.status()
            assert status.commands_sent == 2
            assert status.mqtt_connected is False
            assert status.mqtt_buffered == 4
            assert status.outbox_delivered.get("webhook", 0) == 0
            assert webhook.attempts == 0
            assert not any(s.ready.is_set() for s in gateway.sources if "mqtt" in s.name)

            # The uplink comes back: each queued notification once, in order.
            await webhook.start()
            try:
                await wait_until(lambda: len(webhook.keys) == 4, 15, "webhook deliveries")
                await asyncio.sleep(0.5)  # several retry periods: no late duplicates
                assert webhook.keys == ids
                assert [b["event_id"] for b in webhook.bodies] == ids
            finally:
                await webhook.stop()

            # The broker comes back: the local-MQTT output delivers what it held, in order.
            broker.start()
            async with plc_listener(broker, plc_id, topic) as plc:
                await wait_until(lambda: len({m["event_id"] for m in plc}) == 4, 15, "MQTT alerts")
            # QoS 1 may repeat an event across a reconnect; first arrivals keep the order.
            assert list(dict.fromkeys(m["event_id"] for m in plc)) == ids
            assert gateway.outputs.status().mqtt_buffered == 0
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
