"""Adverts of simulated nodes, seen through bleak's scanner on the Bumble backend."""

from __future__ import annotations

import asyncio

from bleak import BleakScanner
from bumble import data_types
from bumble.core import AdvertisingData
from bumble.device import Device
from bumble.host import Host
from bumble.transport.common import Transport

from gateway.ble import BumbleDeviceDetails, BumbleScanner, get_adapter, open_hci
from gateway.ble.radio import LocalRadio
from gateway.protocol.ble_layout import ADV_COMPANY_ID, FIELDGATE_SERVICE_UUID
from tests.integration.ble.conftest import WAIT_S, FindNode, MakeNode


async def test_scanner_sees_node_name_and_fieldgate_service_uuid(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    node = await make_node("pump-07")

    device, advert = await find_node(gateway_spec, lambda _d, a: a.local_name == "pump-07")

    assert device.address == node.address
    assert device.name == "pump-07"
    assert isinstance(device.details, BumbleDeviceDetails)
    assert advert.service_uuids == [FIELDGATE_SERVICE_UUID]
    assert advert.manufacturer_data == {}
    assert advert.rssi < 0


async def test_longest_node_id_fits_in_one_advert(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    node_id = "n" * 32
    await make_node(node_id, advert_payload=bytes(range(100)))

    _, advert = await find_node(gateway_spec, lambda _d, a: a.local_name == node_id)

    assert advert.manufacturer_data == {ADV_COMPANY_ID: bytes(range(100))}


async def test_service_uuid_filter_drops_adverts_without_the_fieldgate_uuid(
    radio: LocalRadio, make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    stranger, stranger_hci = await _start_plain_advertiser(radio.specs[3], "headphones")
    try:
        # The stranger advertises too: an unfiltered scan sees it.
        await find_node(gateway_spec, lambda _d, a: a.local_name == "headphones")
        await make_node("pump-01")

        names = set()
        for _ in range(10):
            _, advert = await find_node(
                gateway_spec, lambda _d, _a: True, service_uuids=[FIELDGATE_SERVICE_UUID]
            )
            names.add(advert.local_name)
    finally:
        await stranger.power_off()
        await stranger_hci.close()

    assert names == {"pump-01"}


async def test_beacon_manufacturer_data_arrives_and_follows_updates(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    beacon = await make_node("soil-3", connectable=False, advert_payload=b"\x01reading-1")

    _, first = await find_node(gateway_spec, lambda _d, a: a.local_name == "soil-3")
    assert first.manufacturer_data == {ADV_COMPANY_ID: b"\x01reading-1"}
    assert first.service_uuids == [FIELDGATE_SERVICE_UUID]

    await beacon.set_advert_payload(b"\x02reading-2")
    _, second = await find_node(
        gateway_spec,
        lambda _d, a: a.manufacturer_data.get(ADV_COMPANY_ID, b"").startswith(b"\x02"),
    )
    assert second.manufacturer_data == {ADV_COMPANY_ID: b"\x02reading-2"}


async def _start_plain_advertiser(spec: str, name: str) -> tuple[Device, Transport]:
    """A non-fieldgate BLE device (plain Bumble), advertising only its name."""
    transport = await open_hci(spec)
    device = Device(name=name, host=Host(transport.source, transport.sink))
    await device.power_on()
    await device.start_advertising(
        advertising_data=bytes(AdvertisingData([data_types.CompleteLocalName(name)])),
        advertising_interval_min=20,
        advertising_interval_max=20,
    )
    return device, transport


async def test_scanners_on_one_adapter_share_it_and_stop_independently(
    make_node: MakeNode, gateway_spec: str
) -> None:
    await make_node("pump-07")
    seen_by_second: asyncio.Queue[str | None] = asyncio.Queue()
    first = BleakScanner(lambda _d, _a: None, backend=BumbleScanner, bumble_transport=gateway_spec)
    second = BleakScanner(
        lambda _d, a: seen_by_second.put_nowait(a.local_name),
        backend=BumbleScanner,
        bumble_transport=gateway_spec,
    )

    await first.start()
    await second.start()
    await first.stop()
    while not seen_by_second.empty():
        seen_by_second.get_nowait()
    async with asyncio.timeout(WAIT_S):
        assert await seen_by_second.get() == "pump-07"
    await second.stop()

    adapter = await get_adapter(gateway_spec)
    assert adapter.device is not None
    assert adapter.device.is_scanning is False
