"""A node whose clock reads ten years ahead still goes silent when it stops sending.

Before: its Status was stamped ten years ahead and liveness used that stamp, so the node
never went silent (a broken RTC does the same, no attacker needed). Node time ahead of the
receive time by more than the skew limit is now replaced by the receive time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiomqtt

from gateway.events import AlertEvent, AlertEventKind
from tests.fixtures.gateway import gateway_config, running_gateway, wait_until
from tests.fixtures.servers import Mosquitto

TEN_YEARS_MS = 10 * 365 * 86_400_000


def status(seq: int, t_ms: int) -> bytes:
    return (
        f'{{"v":1,"type":"status","node_id":"pump-09","boot_id":3,"seq":{seq},'
        f'"time_base":"unix_ms","t":{t_ms},"uptime_ms":{seq * 1000},"battery_mv":3700,'
        f'"rssi_dbm":-60,"free_ram_bytes":9000,"firmware_version":"1.0.0",'
        f'"oldest_unacked_seq":0,"slots":[]}}'
    ).encode()


async def test_a_future_clock_does_not_keep_a_silent_node_alive(
    mosquitto: Mosquitto, mqtt_prefix: str, tmp_path: Path
) -> None:
    cfg = gateway_config(
        tmp_path,
        site=mqtt_prefix,
        mqtt={"enabled": True, "url": mosquitto.url, "client_id": f"gw-{mqtt_prefix}"},
        alerts={
            "use_default_rules": False,
            "tick_interval_s": 0.1,
            "rules": {"silent": {"kind": "silent", "after_s": 1.5}},
        },
    )
    raised: list[AlertEvent] = []
    async with running_gateway(cfg) as gw, aiomqtt.Client(mosquitto.host, mosquitto.port) as node:
        subscription = gw.alert_bus.subscribe(100)

        async def collect() -> None:
            async for item in subscription:
                if isinstance(item, AlertEvent) and item.kind is AlertEventKind.RAISED:
                    raised.append(item)

        collector = asyncio.create_task(collect())
        topic = f"fieldgate/{mqtt_prefix}/pump-09/status"
        future = int(time.time() * 1000) + TEN_YEARS_MS
        for seq in (1, 2):
            await node.publish(topic, status(seq, future + seq), qos=1)
        # The node now stops sending: it must be reported silent about 1.5 s later.
        await wait_until(lambda: len(raised) > 0, timeout_s=10, what="node_silent raised")
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        subscription.close()
    assert raised[0].alert.node_id == "pump-09"
    assert raised[0].alert.rule == "silent"
