"""The demo runs the real gateway with simulated nodes, even with no broker installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.demo import run_demo
from gateway.store.journal import JournalReader


@pytest.mark.parametrize("embedded", [False, True], ids=["mosquitto", "embedded-amqtt"])
async def test_demo_ingests_from_serial_mqtt_and_ble_nodes(tmp_path: Path, embedded: bool) -> None:
    gateway = await run_demo(2, 20.0, tmp_path, seconds=5.0, embedded_broker=embedded)
    reader = JournalReader(gateway.config.journal_path)
    try:
        nodes = {row.node_id: row for row in reader.nodes()}
    finally:
        reader.close()
    assert {row.transport for row in nodes.values()} == {"serial", "mqtt", "ble"}
    for row in nodes.values():
        assert row.received > 10, f"{row.node_id} delivered too little"
        assert row.lost == 0
