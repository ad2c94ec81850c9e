"""Offline alerting end to end through AlertOutputs with real servers on loopback:
the local path (event stream, local MQTT broker, node command, script hook) works while
the "internet" (webhook server, SMTP relay) is unreachable; once it is back, every
queued notification arrives exactly once and in order, across an outputs restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.events import AlertEvent, AlertEventKind
from gateway.outputs import AlertBus, AlertOutputs, OutputsConfig
from gateway.outputs.bus import Subscription
from tests.fixtures.gateway import wait_until
from tests.fixtures.servers import Mosquitto
from tests.fixtures.tasks import in_background
from tests.integration.outputs.servers import SmtpRelay, WebhookReceiver
from tests.unit.outputs.helpers import RecordingSender, make_event

FAST_RETRY = {"retry_first_s": 0.05, "retry_max_s": 0.25}


HOOK = """#!/bin/sh
cat > "$1/$FIELDGATE_EVENT_ID.json"
"""


def _hook(tmp_path: Path) -> Path:
    (tmp_path / "hook").mkdir()
    path = tmp_path / "hook" / "hook.sh"
    path.write_text(HOOK)
    path.chmod(0o755)
    return path


def _config(
    webhook: WebhookReceiver,
    relay: SmtpRelay,
    broker: Mosquitto,
    prefix: str,
    hook: Path,
    **extra: Any,
) -> OutputsConfig:
    return OutputsConfig.model_validate(
        {
            "local_mqtt": {
                "enabled": True,
                "url": broker.url,
                "reconnect_max_s": 0.5,
                "client_id": f"alerts-{prefix}",
            },
            "webhook": {
                "enabled": True,
                "url": webhook.url,
                "timeout_s": 2,
                "headers": {"Authorization": "Bearer t0ken"},
            },
            "email": {
                "enabled": True,
                "host": relay.host,
                "port": relay.port,
                "starttls": False,
                "timeout_s": 2,
                "from_addr": "gateway@farm.test",
                "to_addrs": ["ops@farm.test"],
                "min_severity": "info",
            },
            "node_actions": {
                "actions": [
                    {
                        "rule": "vibration_high",
                        "command": "actuate",
                        "args": {"output": "motor", "state": False},
                    }
                ]
            },
            "script_hook": {"enabled": True, "path": str(hook), "args": [str(hook.parent)]},
            "outbox": FAST_RETRY,
            **extra,
        }
    )


@contextlib.asynccontextmanager
async def running(outputs: AlertOutputs) -> AsyncIterator[AlertOutputs]:
    async with in_background(outputs.run(), "test:outputs"):
        yield outputs


@contextlib.asynccontextmanager
async def mqtt_listener(broker: Mosquitto, topic: str) -> AsyncIterator[list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                got.append({"topic": str(message.topic), **json.loads(message.payload)})

        task = asyncio.create_task(collect(), name="test:mqtt_listener")
        try:
            yield got
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _drain(sub: Subscription, n: int) -> list[object]:
    return [await asyncio.wait_for(anext(sub), 5) for _ in range(n)]


def _events(ns: range) -> list[AlertEvent]:
    kinds = [AlertEventKind.RAISED, AlertEventKind.ESCALATED, AlertEventKind.CLEARED]
    return [make_event(n, kind=kinds[n % 3]) for n in ns]


async def test_local_outputs_work_offline_and_queued_notifications_arrive_once_in_order(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    webhook, relay = WebhookReceiver(), SmtpRelay()  # not listening: "internet down"
    hook = _hook(tmp_path)
    config = _config(webhook, relay, mosquitto, mqtt_prefix, hook)
    sender = RecordingSender()
    first, second = _events(range(6)), _events(range(6, 12))

    async with mqtt_listener(mosquitto, f"fieldgate/{mqtt_prefix}/alerts/#") as on_mqtt:
        # Phase 1: offline; the local path delivers everything at once.
        bus = AlertBus()
        outputs = AlertOutputs(config, bus, sender, tmp_path, site=mqtt_prefix)
        sub = bus.subscribe(100)
        async with running(outputs):
            await wait_until(outputs.local_mqtt.connected.is_set, 10, "local broker")  # type: ignore[union-attr]
            for event in first:
                outputs.deliver(event)
            assert await _drain(sub, 6) == first
            await wait_until(lambda: len(on_mqtt) == 6, 10, "alerts on the local broker")
            await wait_until(lambda: len(sender.calls) == 4, 10, "motor stop commands")
            await wait_until(lambda: outputs.status().scripts_succeeded == 6, 10, "hooks")
            await wait_until(
                lambda: min(outputs.status().outbox_failures.values()) >= 2, 10, "retries"
            )
            status = outputs.status()
            assert status.outbox_online == {"webhook": False, "email": False}
            assert status.outbox_delivered == {"webhook": 0, "email": 0}

        # Phase 2: the gateway restarted (new outputs, same data dir), still offline.
        bus = AlertBus()
        outputs = AlertOutputs(config, bus, sender, tmp_path, site=mqtt_prefix)
        async with running(outputs):
            for event in second:
                outputs.deliver(event)
            await wait_until(lambda: len(on_mqtt) == 12, 10, "alerts on the local broker")
            assert outputs.script_hook is not None
            await wait_until(lambda: outputs.script_hook.succeeded == 6, 10, "script hooks")
            # Phase 3: the internet comes back.
            await webhook.start()
            await relay.start()
            try:
                await wait_until(
                    lambda: len(webhook.keys) >= 12 and len(relay.inbox) >= 12,
                    20,
                    "every queued notification",
                )
                await asyncio.sleep(0.3)  # would a duplicate follow?
                assert outputs.status().outbox_online == {"webhook": True, "email": True}
            finally:
                await webhook.stop()
                await relay.stop()

    expected = [e.event_id for e in first + second]
    assert [m["event_id"] for m in on_mqtt] == expected
    assert {m["topic"] for m in on_mqtt} == {f"fieldgate/{mqtt_prefix}/alerts/pump-07"}
    # Exactly once, in order, counted by event id on the receiving side.
    assert webhook.keys == expected
    assert [b["event_id"] for b in webhook.bodies] == expected
    assert relay.event_ids == expected
    assert [e["event_id"] for e in relay.attached_events()] == expected
    assert Counter(m["Message-ID"] for m in relay.inbox).most_common(1)[0][1] == 1
    assert set(webhook.auth) == {"Bearer t0ken"}
    hooked = sorted(p.stem for p in hook.parent.glob("*.json"))
    assert hooked == sorted(expected)
    assert json.loads((hook.parent / f"{expected[0]}.json").read_text())["event_id"] == expected[0]
    assert len(sender.calls) == 8  # the raised and escalated events (4 per phase)
    assert len({c.cmd_id for c in sender.calls}) == 8


@pytest.fixture
def persistent_mosquitto() -> Iterator[Mosquitto]:
    """A restartable broker whose sessions survive the restart.

    Run as root, mosquitto drops to its own user and cannot write its persistence file
    into pytest's private (0700) tmp dirs, so sessions are silently lost on restart; this
    broker's directory is world-writable instead.
    """
    workdir = Path(tempfile.mkdtemp(prefix="fieldgate-mosquitto-"))
    workdir.chmod(0o777)
    broker = Mosquitto(workdir=workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def test_local_mqtt_buffers_while_the_broker_is_down(
    tmp_path: Path, persistent_mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    broker = persistent_mosquitto
    topic = f"fieldgate/{mqtt_prefix}/alerts/#"
    config = OutputsConfig.model_validate(
        {"local_mqtt": {"enabled": True, "url": broker.url, "reconnect_max_s": 0.3}}
    )
    outputs = AlertOutputs(config, AlertBus(), None, tmp_path, site=mqtt_prefix)
    mqtt = outputs.local_mqtt
    assert mqtt is not None
    events = _events(range(8))
    got: list[str] = []

    async def listen() -> None:
        # A persistent session: QoS 1 messages published while we reconnect are kept.
        while True:
            with contextlib.suppress(aiomqtt.MqttError):
                async with aiomqtt.Client(
                    broker.host,
                    broker.port,
                    identifier=f"plc-{mqtt_prefix}",
                    clean_session=False,
                ) as client:
                    await client.subscribe(topic, qos=1)
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        got.append(json.loads(message.payload)["event_id"])
            await asyncio.sleep(0.1)

    async with running(outputs), asyncio.TaskGroup() as tg:
        listener = tg.create_task(listen(), name="test:plc")
        await wait_until(mqtt.connected.is_set, 10, "connected")
        outputs.deliver(events[0])
        await wait_until(lambda: got == [events[0].event_id], 10, "first alert")
        broker.stop()
        await wait_until(lambda: not mqtt.connected.is_set(), 10, "noticed broker down")
        for event in events[1:]:
            outputs.deliver(event)
        await asyncio.sleep(0.3)
        assert mqtt.buffered == 7
        broker.start()
        await wait_until(lambda: len(set(got)) == 8, 15, "buffered alerts after restart")
        listener.cancel()
    # At least once over a broker restart; in order of first arrival; no loss.
    assert list(dict.fromkeys(got)) == [e.event_id for e in events]
    assert mqtt.dropped == 0


async def test_a_full_local_mqtt_buffer_drops_the_oldest_and_counts(
    tmp_path: Path, mqtt_prefix: str
) -> None:
    config = OutputsConfig.model_validate(
        {"local_mqtt": {"enabled": True, "url": "mqtt://127.0.0.1:1", "buffer_max_events": 3}}
    )
    outputs = AlertOutputs(config, AlertBus(), None, tmp_path, site=mqtt_prefix)
    for event in _events(range(5)):
        outputs.deliver(event)
    assert outputs.status().mqtt_buffered == 3
    assert outputs.status().mqtt_dropped == 2


async def test_webhook_retries_server_errors_and_skips_a_refused_event(tmp_path: Path) -> None:
    webhook = WebhookReceiver(status=503)
    events = _events(range(4))
    webhook.statuses[events[1].event_id] = 422
    config = OutputsConfig.model_validate(
        {"webhook": {"enabled": True, "url": webhook.url}, "outbox": FAST_RETRY}
    )
    outputs = AlertOutputs(config, AlertBus(), None, tmp_path, site="s")
    await webhook.start()
    try:
        async with running(outputs):
            for event in events:
                outputs.deliver(event)
            await wait_until(lambda: webhook.attempts >= 3, 10, "retries on 503")
            assert webhook.keys == []
            webhook.status = 200
            await wait_until(lambda: len(webhook.keys) == 3, 10, "delivery")
            assert outputs.status().outbox_rejected == {"webhook": 1}
    finally:
        await webhook.stop()
    assert webhook.keys == [events[0].event_id, events[2].event_id, events[3].event_id]
