"""A BLE node whose address is not the one its id is pinned to, over a real in-process Bumble
radio: its GATT uplinks are refused (not journaled, not acknowledged) and alerted, while the
node pinned to its own address is accepted. The "impostor" is a simulated node named like a
node pinned elsewhere (nodes.pins), which is what a copied name on another radio looks like."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from firmware_tools.sim.ble_peripheral import static_address
from gateway.ble.radio import LocalRadio
from gateway.events import AlertEvent
from gateway.identity.gate import PIN_MISMATCH
from gateway.identity.pins import read_pins
from tests.fixtures.gateway import gateway_config, journal_keys, running_gateway, wait_until
from tests.integration.gateway.test_ble_ingest import node_sim

pytestmark = pytest.mark.timeout(60)


async def test_a_ble_node_from_another_address_is_refused(tmp_path: Path) -> None:
    real_address = static_address("pb-01").to_string(False)
    async with LocalRadio(3) as radio:
        cfg = gateway_config(
            tmp_path,
            ble={
                "enabled": True,
                "transport": radio.specs[0],
                "nodes": ["pa-01", "pb-01"],
                "reconnect_max_s": 0.3,
            },
            # pa-01 really lives at another address: the one advertising here is an impostor.
            nodes={"pins": {"pa-01": "ble:C0:00:00:00:00:01"}},
        )
        async with contextlib.AsyncExitStack() as stack:
            impostor = await stack.enter_async_context(node_sim("pa", radio.specs[1]))
            real = await stack.enter_async_context(node_sim("pb", radio.specs[2]))
            await impostor.wait_ready()
            await real.wait_ready()
            gw = await stack.enter_async_context(running_gateway(cfg))
            events = gw.alert_bus.subscribe(100)
            await wait_until(
                lambda: sum(1 for n, _b, _s in journal_keys(cfg) if n == "pb-01") >= 10,
                what="the real node's readings",
            )
            await wait_until(lambda: gw.gate.refused[PIN_MISMATCH] >= 5, what="refusals")
            alert = await anext(aiter(events))
            events.close()
            assert impostor.stats()["pa-01"]["acked"] == 0
            assert real.stats()["pb-01"]["acked"] > 0
    assert not [k for k in journal_keys(cfg) if k[0] == "pa-01"]
    assert isinstance(alert, AlertEvent)
    assert alert.alert.rule == "node_identity"
    assert "pa-01" in alert.alert.message
    assert read_pins(cfg.data_dir / "node_pins.json")["pb-01"]["channel"] == f"ble:{real_address}"
