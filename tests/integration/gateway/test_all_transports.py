"""Serial, BLE and MQTT nodes at once, through a broker restart, a serial unplug/replug and a
BLE disconnect in the same run: every reading a node sent is journaled exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from firmware_tools.sim.ble_link import BleLink
from firmware_tools.sim.fleet import SimConfig, Simulator
from gateway.ble.radio import LocalRadio
from gateway.sources.ble import BleSource
from gateway.sources.mqtt import MqttSource
from gateway.sources.serial import SerialSource
from tests.fixtures.gateway import gateway_config, journal_keys, running_gateway, wait_until
from tests.fixtures.servers import Mosquitto

pytestmark = pytest.mark.timeout(60)
Key = tuple[str, int, int]


def sent_readings(sims: list[Simulator]) -> set[Key]:
    """Every sample the nodes have put in a batch so far, as (node, boot, seq)."""
    return {
        (node_id, rec.boot_id, rec.seq)
        for sim in sims
        for node_id, node in sim.nodes.items()
        for rec in node.ground_truth
    }


def per_node(keys: list[Key] | set[Key]) -> Counter[str]:
    return Counter(node for node, _boot, _seq in keys)


def fleet(nodes: int, transports: tuple[str, ...], prefix: str, **kwargs: Any) -> Simulator:
    return Simulator(
        SimConfig(
            nodes=nodes,
            transports=transports,
            node_prefix=prefix,
            rate_hz=20.0,
            batch_size=5,
            resend_timeout_ms=500,
            status_interval_ms=60_000,
            max_unacked=256,  # outages must not force a node to evict unacked readings
            **kwargs,
        )
    )


async def test_every_reading_from_every_transport_is_journaled_exactly_once_across_outages(
    tmp_path: Path, restartable_mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    broker = restartable_mosquitto
    # A BLE node is a host on its own controller, so each BLE node is its own one-node fleet.
    async with LocalRadio(3) as radio, contextlib.AsyncExitStack() as stack:
        wired = fleet(
            4,
            ("serial", "mqtt"),
            "pump",
            broker_url=broker.url,
            site=mqtt_prefix,
            pty_dir=tmp_path / "dev",
        )
        sims = [await stack.enter_async_context(wired)]
        for prefix, spec in (("bla", radio.specs[1]), ("blb", radio.specs[2])):
            ble_fleet = fleet(1, ("ble",), prefix, ble_transport=spec)
            sims.append(await stack.enter_async_context(ble_fleet))
        for sim in sims:
            await sim.wait_ready()
        small = sims[1].nodes["bla-01"].link
        assert isinstance(small, BleLink)
        small.max_chunk_bytes = 20  # the default MTU's size: every batch spans several chunks
        nodes = [n for sim in sims for n in sim.nodes]
        by_kind: dict[str, list[str]] = {}
        for sim in sims:
            for node_id, (kind, _address) in sim.addresses().items():
                by_kind.setdefault(kind, []).append(node_id)
        cfg = gateway_config(
            tmp_path,
            site=mqtt_prefix,
            mqtt={
                "enabled": True,
                "url": broker.url,
                "client_id": f"gw-{mqtt_prefix}",
                "reconnect_max_s": 0.5,
            },
            serial={
                "ports": [{"path": wired.addresses()[n][1]} for n in by_kind["serial"]],
                "reopen_interval_s": 0.05,
            },
            ble={
                "enabled": True,
                "transport": radio.specs[0],
                "nodes": by_kind["ble"],
                "reconnect_max_s": 0.3,
            },
        )
        async with running_gateway(cfg) as gw:
            mqtt = next(s for s in gw.sources if isinstance(s, MqttSource))
            serial = [s for s in gw.sources if isinstance(s, SerialSource)]
            ble = next(s for s in gw.sources if isinstance(s, BleSource))

            def every_node_has(counts: Counter[str], more: int) -> bool:
                now = per_node(journal_keys(cfg))
                return all(now[n] >= counts[n] + more for n in nodes)

            await wait_until(lambda: every_node_has(Counter(), 20), what="all nodes flowing")

            # Outage 1: the broker restarts (MQTT nodes and the gateway reconnect).
            broker.stop()
            await wait_until(lambda: not mqtt.ready.is_set(), what="gateway losing the broker")
            await asyncio.sleep(0.3)
            broker.start()
            await wait_until(mqtt.ready.is_set, what="gateway back on the broker")

            # Outage 2: a serial node's cable is pulled and plugged back in.
            cable = wired.serial_link(by_kind["serial"][0])
            opens = serial[0].opens
            cable.unplug()
            await asyncio.sleep(0.5)
            cable.replug()
            await wait_until(lambda: serial[0].opens > opens, what="the serial port reopened")

            # Outage 3: a BLE node drops its connection and the gateway reconnects.
            link = sims[1].nodes[by_kind["ble"][0]].link
            assert isinstance(link, BleLink)
            assert link.peripheral is not None
            connections = ble.connections
            await link.peripheral.disconnect()
            await wait_until(lambda: ble.connections > connections, what="BLE reconnect")

            after = per_node(journal_keys(cfg))
            await wait_until(lambda: every_node_has(after, 20), what="all nodes flowing again")
            # What was sent up to now must all arrive (resends repair every outage).
            sent = sent_readings(sims)
            await wait_until(
                lambda: sent <= set(journal_keys(cfg)),
                timeout_s=20,
                what="every sent reading journaled",
            )
            keys = journal_keys(cfg)
            sent_by_now = sent_readings(sims)
            # A cable pulled mid-frame may leave a damaged serial frame (counted); BLE chunks
            # must all reassemble, the disconnect included (a cut message is simply resent).
            ble_malformed = sum(n for (t, _r), n in gw.metrics.malformed.items() if t == "ble")
        stats = {n: st for sim in sims for n, st in sim.stats().items()}

    assert not [k for k, n in Counter(keys).items() if n > 1], "a reading journaled twice"
    assert set(keys) <= sent_by_now, "the journal holds a reading no node sent"
    assert sent <= set(keys)
    counts = per_node(keys)
    assert all(counts[n] >= 40 for n in nodes), counts
    for node_id, node_stats in stats.items():
        assert node_stats["evicted"] == 0, node_id
        assert node_stats["reboots"] == 0, node_id
    # The outages cost messages in flight, which the nodes resent.
    assert sum(s["resent"] for s in stats.values()) > 0
    assert small.chunks_out > 2 * stats["bla-01"]["link_messages_out"]
    assert ble_malformed == 0
