"""A BLE node's id from another radio address is refused (the scan callback fed adverts
directly, as in test_ble_beacons: no radio needed to reach the check under test)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from gateway.config import BleConfig
from gateway.events import AlertEvent
from gateway.identity.config import NodesConfig
from gateway.identity.gate import PIN_MISMATCH, NodeGate
from gateway.identity.pins import PinStore
from gateway.ingest import IngestQueue
from gateway.metrics import Metrics
from gateway.protocol.adv import ADV_COMPANY_ID, encode_adv
from gateway.sources.ble import BleSource


def advert(address: str, name: str, seq: int) -> tuple[BLEDevice, AdvertisementData]:
    data = encode_adv(boot_id=1, seq=seq, uptime_s=seq, values=[("temperature", 21.5)])
    adv = AdvertisementData(
        local_name=name,
        manufacturer_data={ADV_COMPANY_ID: data},
        service_data={},
        service_uuids=[],
        tx_power=None,
        rssi=-60,
        platform_data=(),
    )
    return BLEDevice(address, name, None), adv


def test_a_beacon_id_from_another_address_is_refused_and_alerted(tmp_path: Path) -> None:
    events: list[AlertEvent] = []

    async def scenario() -> tuple[list[int], NodeGate]:
        cfg = NodesConfig()
        gate = NodeGate(cfg, PinStore(tmp_path / "pins.json", {}), alert_sink=events.append)
        src = BleSource(BleConfig(enabled=True), IngestQueue(10, "block"), Metrics(), gate=gate)
        src._on_advert(*advert("c0:ff:ee:00:00:01", "bcn-01", seq=1))  # noqa: SLF001 - adverts fed as the scanner callback does, without a radio
        src._on_advert(*advert("66:66:66:00:00:02", "bcn-01", seq=2))  # noqa: SLF001 - the spoof: same node id, another address
        src._on_advert(*advert("C0:FF:EE:00:00:01", "bcn-01", seq=3))  # noqa: SLF001 - the real node again
        queued = src._beacons  # noqa: SLF001 - what the beacon forwarder would hand to the journal
        return [queued.get_nowait().msg.seq for _ in range(queued.qsize())], gate

    seqs, gate = asyncio.run(scenario())
    assert seqs == [1, 3]
    assert gate.refused[PIN_MISMATCH] == 1
    assert [e.alert.rule for e in events] == ["node_identity"]
    assert "ble:66:66:66:00:00:02" in events[0].alert.message
