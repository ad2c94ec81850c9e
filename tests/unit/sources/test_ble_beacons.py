"""BLE beacon bookkeeping (the scan callback, fed adverts directly): repeats are filtered, and made-up node ids cannot grow it forever."""

from __future__ import annotations

import asyncio

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from gateway.config import BleConfig
from gateway.ingest import IngestQueue
from gateway.metrics import Metrics
from gateway.protocol.adv import ADV_COMPANY_ID, encode_adv
from gateway.sources import ble
from gateway.sources.ble import BleSource


def advert(name: str, seq: int) -> tuple[BLEDevice, AdvertisementData]:
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
    return BLEDevice("00:00:00:00:00:01", name, None), adv


def source(nodes: tuple[str, ...] = ()) -> BleSource:
    return BleSource(BleConfig(enabled=True, nodes=nodes), IngestQueue(10, "block"), Metrics())


def test_a_repeated_advert_is_forwarded_once() -> None:
    async def scenario() -> int:
        src = source()
        for _ in range(3):
            src._on_advert(*advert("bcn-01", seq=7))  # noqa: SLF001 - adverts fed as the scanner callback does, without a radio; the bound under test is internal
        src._on_advert(*advert("bcn-01", seq=8))  # noqa: SLF001 - adverts fed as the scanner callback does, without a radio; the bound under test is internal
        return src._beacons.qsize()  # noqa: SLF001 - adverts fed as the scanner callback does, without a radio; the bound under test is internal

    assert asyncio.run(scenario()) == 2


def test_a_flood_of_made_up_beacon_ids_stays_bounded() -> None:
    async def scenario() -> tuple[int, int]:
        src = source(nodes=("pump-01",))
        for i in range(ble._MAX_REMEMBERED_BEACONS + 500):  # noqa: SLF001 - adverts fed as the scanner callback does, without a radio; the bound under test is internal
            src._on_advert(*advert(f"fake-{i}", seq=1))  # noqa: SLF001 - adverts fed as the scanner callback does, without a radio; the bound under test is internal
            while not src._beacons.empty():  # the forwarder's job, done here  # noqa: SLF001 - adverts fed as the scanner callback does, without a radio; the bound under test is internal
                src._beacons.get_nowait()  # noqa: SLF001 - adverts fed as the scanner callback does, without a radio; the bound under test is internal
        return len(src._last_beacon), len(src._beacon_names)  # noqa: SLF001 - adverts fed as the scanner callback does, without a radio; the bound under test is internal

    remembered, beacon_names = asyncio.run(scenario())
    assert remembered <= ble._MAX_REMEMBERED_BEACONS  # noqa: SLF001 - adverts fed as the scanner callback does, without a radio; the bound under test is internal
    assert beacon_names == 0  # only configured names are remembered as beacon-only
