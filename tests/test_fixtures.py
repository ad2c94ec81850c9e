"""The test servers are real and answer on loopback."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import aiomqtt

from tests.fixtures.servers import Mosquitto, VictoriaMetrics


async def test_mosquitto_delivers_qos1_message(mosquitto: Mosquitto, mqtt_prefix: str) -> None:
    topic = f"{mqtt_prefix}/hello"
    sub_id = f"{mqtt_prefix}-sub"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=sub_id) as sub:
        await sub.subscribe(topic, qos=1)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
            await pub.publish(topic, b"payload", qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(sub.messages))
    assert message.payload == b"payload"
    assert str(message.topic) == topic


async def test_restarted_broker_accepts_connections_on_same_port(
    restartable_mosquitto: Mosquitto,
) -> None:
    port = restartable_mosquitto.port
    restartable_mosquitto.stop()
    restartable_mosquitto.start()
    assert restartable_mosquitto.port == port
    async with aiomqtt.Client(restartable_mosquitto.host, port) as client:
        await client.publish("x/y", b"1", qos=1)


def test_victoria_metrics_accepts_influx_line_protocol(victoria_metrics: VictoriaMetrics) -> None:
    body = b"fixture_check,node=n1 value=42 1700000000000000000\n"
    req = urllib.request.Request(
        f"{victoria_metrics.url}/api/v2/write?org=o&bucket=b&precision=ns", data=body, method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 204
    series = victoria_metrics.export('{__name__="fixture_check_value"}')
    assert len(series) == 1
    assert series[0]["values"] == [42]
    assert json.dumps(series[0]["metric"]).count("n1") == 1
