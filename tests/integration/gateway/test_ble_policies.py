"""BLE source policies on a real Bumble radio: beacon-only nodes, the connection cap with
its time share, and the scan watchdog."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from firmware_tools.sim.ble_link import BleLink
from firmware_tools.sim.fleet import SimConfig, Simulator
from gateway.ble import get_adapter
from gateway.ble.radio import LocalRadio
from gateway.sources.ble import BleSource
from tests.fixtures.gateway import gateway_config, journal_keys, running_gateway, wait_until
from tests.fixtures.ingest import wired_gateway

pytestmark = pytest.mark.timeout(60)


def one_node(prefix: str, spec: str, **kwargs: Any) -> Simulator:
    defaults: dict[str, Any] = {
        "rate_hz": 20.0,
        "batch_size": 5,
        "resend_timeout_ms": 500,
        "status_interval_ms": 60_000,
        "max_unacked": 256,
    }
    return Simulator(
        SimConfig(
            nodes=1,
            node_prefix=prefix,
            transports=("ble",),
            ble_transport=spec,
            **(defaults | kwargs),
        )
    )


def seqs_of(cfg: Any, node: str) -> list[int]:
    return sorted(s for n, _boot, s in journal_keys(cfg) if n == node)


def beacon(prefix: str, spec: str) -> Simulator:
    # A reading every 200 ms, each advertised for two 100 ms advert intervals.
    return one_node(prefix, spec, ble_beacon=True, rate_hz=5.0, batch_size=1)


async def test_beacon_readings_are_decoded_from_adverts_and_journaled_once_each(
    tmp_path: Path,
) -> None:
    async with LocalRadio(2) as radio:
        cfg = gateway_config(tmp_path, ble={"enabled": True, "transport": radio.specs[0]})
        async with running_gateway(cfg) as gw, beacon("bcn", radio.specs[1]) as sim:
            source = gw.sources[0]
            assert isinstance(source, BleSource)
            await wait_until(lambda: len(seqs_of(cfg, "bcn-01")) >= 12, what="12 beacon readings")
            keys = journal_keys(cfg)
            stats = sim.stats()["bcn-01"]
            advertised = stats["link_messages_out"]
            assert source.connections == 0  # nothing to connect to: adverts only
    seqs = sorted(s for n, _b, s in keys if n == "bcn-01")
    # Each advertised reading at most once (its repeated adverts dropped); the node's resends
    # of unacked batches are not advertised as new readings, so seqs never pass the number
    # of batches. A beacon cannot be asked again, so a reading replaced before any scan saw
    # it would be a gap; at this pace (two adverts per reading) there should be none.
    assert not [k for k, n in Counter(keys).items() if n > 1]
    assert seqs[-1] <= advertised
    assert stats["resent"] > 0  # nothing acks a beacon, so its node logic keeps resending
    assert advertised <= stats["sent_samples"]  # ... but only new readings are advertised
    assert len(seqs) >= 0.9 * seqs[-1]


async def test_connections_never_exceed_the_cap_and_time_sharing_serves_every_node(
    tmp_path: Path,
) -> None:
    nodes = ("ca-01", "cb-01", "cc-01")
    cap = 2
    async with LocalRadio(1 + len(nodes)) as radio, contextlib.AsyncExitStack() as stack:
        sims = [
            await stack.enter_async_context(one_node(node[:2], spec))
            for node, spec in zip(nodes, radio.specs[1:], strict=True)
        ]
        for sim in sims:
            await sim.wait_ready()
        links = [sim.nodes[node].link for sim, node in zip(sims, nodes, strict=True)]
        assert all(isinstance(link, BleLink) for link in links)
        cfg = gateway_config(
            tmp_path,
            ble={
                "enabled": True,
                "transport": radio.specs[0],
                "nodes": list(nodes),
                "max_connections": cap,
                "reconnect_max_s": 0.3,
            },
        )
        most_at_once = 0

        async def watch_the_air() -> None:
            # What the nodes' own controllers see, not what the gateway believes.
            nonlocal most_at_once
            while True:
                up = sum(
                    1
                    for link in links
                    if isinstance(link, BleLink)
                    and link.peripheral is not None
                    and link.peripheral.connected
                )
                most_at_once = max(most_at_once, up)
                await asyncio.sleep(0.01)

        async with (
            wired_gateway(cfg, session_share_s=0.6) as (gw, _downlinks),
            asyncio.TaskGroup() as tg,
        ):
            watcher = tg.create_task(watch_the_air(), name="test:air-watch")
            source = next(s for s in gw.sources if isinstance(s, BleSource))
            for node, sim in zip(nodes, sims, strict=True):
                await wait_until(
                    lambda node=node, sim=sim: (
                        len(seqs_of(cfg, node)) >= 40 and sim.stats()[node]["acked"] >= 8
                    ),
                    timeout_s=20,
                    what=f"{node} served and acknowledged",
                )
            watcher.cancel()
            yields = source.slot_yields
            gateway_most = source.max_connected
    assert most_at_once == cap
    assert gateway_most == cap
    assert yields >= 1  # someone gave up a slot so that the third node got a turn


async def test_a_scan_that_goes_silent_is_restarted_by_the_watchdog(tmp_path: Path) -> None:
    async with LocalRadio(2) as radio:
        cfg = gateway_config(
            tmp_path,
            ble={"enabled": True, "transport": radio.specs[0], "scan_watchdog_s": 0.5},
        )
        async with running_gateway(cfg) as gw, beacon("wd", radio.specs[1]):
            source = gw.sources[0]
            assert isinstance(source, BleSource)
            await wait_until(lambda: len(seqs_of(cfg, "wd-01")) >= 3, what="beacon readings")
            assert source.scan_restarts == 0
            # The controller stops scanning behind the gateway's back (as a wedged dongle
            # does): no error anywhere, just no more advertising reports.
            adapter = await get_adapter(radio.specs[0])
            assert adapter.device is not None
            assert adapter.device.is_scanning
            await adapter.device.stop_scanning()
            stalled_at = len(seqs_of(cfg, "wd-01"))
            await wait_until(lambda: source.scan_restarts >= 1, what="the watchdog firing")
            # Readings taken meanwhile were only in adverts nobody heard: at most one more.
            assert len(seqs_of(cfg, "wd-01")) <= stalled_at + 1
            assert adapter.device.is_scanning
            await wait_until(
                lambda: len(seqs_of(cfg, "wd-01")) >= stalled_at + 5,
                what="beacon readings after the restart",
            )
