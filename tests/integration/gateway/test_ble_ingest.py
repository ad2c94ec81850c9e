"""BLE nodes on a real in-process Bumble radio: GATT uplinks journaled once, acks drain, reconnects."""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from firmware_tools.sim.ble_link import BleLink
from firmware_tools.sim.fleet import SimConfig, Simulator
from gateway.ble.radio import LocalRadio
from gateway.sources.ble import BleSource
from tests.fixtures.gateway import gateway_config, journal_keys, running_gateway, wait_until

pytestmark = pytest.mark.timeout(60)
NODES = ("pa-01", "pb-01")


def node_sim(prefix: str, spec: str) -> Simulator:
    return Simulator(
        SimConfig(
            nodes=1,
            node_prefix=prefix,
            transports=("ble",),
            ble_transport=spec,
            rate_hz=20.0,
            batch_size=5,
            resend_timeout_ms=500,
            status_interval_ms=60_000,
        )
    )


def seqs(cfg: Any, node: str) -> list[int]:
    return [s for n, _boot, s in journal_keys(cfg) if n == node]


def gapless(values: list[int], at_least: int) -> bool:
    """At least ``at_least`` sample seqs, each once, with no hole (seq 1 is the boot's Status)."""
    ordered = sorted(values)
    return len(ordered) >= at_least and ordered == list(range(2, 2 + len(ordered)))


async def test_ble_nodes_are_journaled_once_acked_and_reconnected_after_a_drop(
    tmp_path: Path,
) -> None:
    async with LocalRadio(3) as radio:
        cfg = gateway_config(
            tmp_path,
            ble={
                "enabled": True,
                "transport": radio.specs[0],
                "nodes": list(NODES),
                "reconnect_max_s": 0.3,
            },
        )
        async with contextlib.AsyncExitStack() as stack:
            sim_a = await stack.enter_async_context(node_sim("pa", radio.specs[1]))
            sim_b = await stack.enter_async_context(node_sim("pb", radio.specs[2]))
            await sim_a.wait_ready()
            await sim_b.wait_ready()
            gw = await stack.enter_async_context(running_gateway(cfg))
            source = gw.sources[0]
            assert isinstance(source, BleSource)
            for node in NODES:
                await wait_until(
                    lambda node=node: gapless(seqs(cfg, node), 20),
                    what=f"20 readings from {node}",
                )
            await wait_until(
                lambda: (
                    sim_a.stats()["pa-01"]["acked"] >= 10 and sim_b.stats()["pb-01"]["acked"] >= 10
                ),
                what="acks reaching both nodes",
            )
            connections = source.connections
            link = sim_a.nodes["pa-01"].link
            assert isinstance(link, BleLink)
            peripheral = link.peripheral
            assert peripheral is not None
            await peripheral.disconnect()
            before = len(seqs(cfg, "pa-01"))
            await wait_until(lambda: source.connections > connections, what="a reconnect")
            await wait_until(
                lambda: gapless(seqs(cfg, "pa-01"), before + 20),
                what="readings after the reconnect with no gap",
            )
            await wait_until(
                lambda: sim_a.stats()["pa-01"]["unacked"] <= 2, what="pa-01's buffer draining"
            )
            stats = sim_a.stats()["pa-01"]
            keys = journal_keys(cfg)
    assert not [k for k, n in Counter(keys).items() if n > 1]
    for node in NODES:
        assert gapless(seqs_of(keys, node), 20)
    assert len(seqs_of(keys, "pa-01")) >= stats["acked_samples"] > 0
    assert stats["link_bad_in"] == 0
    assert stats["link_connects"] >= 1


def seqs_of(keys: list[tuple[str, int, int]], node: str) -> list[int]:
    return [s for n, _boot, s in keys if n == node]
