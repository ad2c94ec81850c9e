"""A gateway-side bleak client against simulated nodes: GATT, notifications, links."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable

import pytest
from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakError, BleakGATTProtocolError, BleakGATTProtocolErrorCode
from bleak_retry_connector import establish_connection

from gateway.ble import BumbleClient
from gateway.ble.radio import LocalRadio
from gateway.protocol.ble_chunks import ChunkDecoder, ChunkEncoder
from gateway.protocol.ble_layout import (
    DOWNLINK_CHAR_UUID,
    ESS_SERVICE_UUID,
    ESS_TEMPERATURE_UUID,
    FIELDGATE_SERVICE_UUID,
    STATUS_CHAR_UUID,
    UPLINK_CHAR_UUID,
)
from gateway.protocol.messages import Ack, Channel, Message, ReadingBatch, Sample, TimeBase
from gateway.protocol.payload import decode_message, encode_message
from tests.integration.ble.conftest import WAIT_S, FindNode, MakeNode

pytestmark = pytest.mark.timeout(30)


async def _client(
    find_node: FindNode,
    gateway_spec: str,
    node_id: str,
    services: Iterable[str] | None = None,
) -> BleakClient:
    """A client for the node seen advertising ``node_id`` (not connected yet)."""
    device, _ = await find_node(gateway_spec, lambda _d, a: a.local_name == node_id)
    return BleakClient(device, services=services, backend=BumbleClient, timeout=WAIT_S)


async def test_client_discovers_node_services_and_negotiates_a_large_mtu(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    await make_node("pump-07")

    async with await _client(find_node, gateway_spec, "pump-07") as client:
        fieldgate = client.services.get_service(FIELDGATE_SERVICE_UUID)
        assert fieldgate is not None
        properties = {c.uuid: c.properties for c in fieldgate.characteristics}
        assert properties == {
            UPLINK_CHAR_UUID: ["notify"],
            STATUS_CHAR_UUID: ["read"],
            DOWNLINK_CHAR_UUID: ["write"],
        }
        uplink = fieldgate.get_characteristic(UPLINK_CHAR_UUID)
        assert uplink is not None
        assert [d.description for d in uplink.descriptors] == [
            "Client Characteristic Configuration"
        ]
        assert client.services.get_characteristic(ESS_TEMPERATURE_UUID) is not None
        assert client.mtu_size == 517
        assert uplink.max_write_without_response_size == 514


async def test_uplink_notifications_arrive_in_order_with_exact_bytes(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    node = await make_node("pump-07")
    payloads = [bytes([i]) * (1 + (i * 37) % 500) for i in range(60)]
    received: list[bytes] = []
    all_in = asyncio.Event()

    def on_uplink(_char: BleakGATTCharacteristic, data: bytearray) -> None:
        received.append(bytes(data))
        if len(received) == len(payloads):
            all_in.set()

    async with await _client(find_node, gateway_spec, "pump-07") as client:
        await client.start_notify(UPLINK_CHAR_UUID, on_uplink)
        await node.wait_for_subscriber()
        for payload in payloads:
            assert await node.notify_uplink(payload)
        async with asyncio.timeout(WAIT_S):
            await all_in.wait()

    assert received == payloads


async def test_node_without_subscriber_keeps_its_uplink(make_node: MakeNode) -> None:
    node = await make_node("pump-07")

    assert await node.notify_uplink(b"\xa1\x00\x01") is False


async def test_uplink_larger_than_one_notification_is_refused_not_truncated(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    node = await make_node("pump-07")

    async with await _client(find_node, gateway_spec, "pump-07") as client:
        await client.start_notify(UPLINK_CHAR_UUID, lambda _c, _d: None)
        await node.wait_for_subscriber()
        with pytest.raises(ValueError, match="exceeds the 514 bytes"):
            await node.notify_uplink(bytes(515))


async def test_stopped_notifications_reach_nobody(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    node = await make_node("pump-07")
    received: list[bytes] = []

    async with await _client(find_node, gateway_spec, "pump-07") as client:
        await client.start_notify(UPLINK_CHAR_UUID, lambda _c, d: received.append(bytes(d)))
        await node.wait_for_subscriber()
        await client.stop_notify(UPLINK_CHAR_UUID)

        assert await node.notify_uplink(b"late") is False
    assert received == []


async def test_downlink_write_with_response_reaches_node_handler(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    downlinks: list[bytes] = []

    async def on_downlink(data: bytes) -> None:
        downlinks.append(data)

    await make_node("pump-07", on_downlink=on_downlink)
    ack = b"\xa3\x01\x00\x02\x1a\x00\x01\x00\x00\x03\x18\x2a"
    largest = bytes(range(256)) * 2  # 512 bytes: the most an attribute value may hold

    async with await _client(find_node, gateway_spec, "pump-07") as client:
        await client.write_gatt_char(DOWNLINK_CHAR_UUID, ack, response=True)
        await client.write_gatt_char(DOWNLINK_CHAR_UUID, largest, response=True)
        with pytest.raises(BleakGATTProtocolError) as caught:
            await client.write_gatt_char(DOWNLINK_CHAR_UUID, largest + b"!", response=True)

    # With response: the write returns only after the node's handler has run.
    assert downlinks == [ack, largest]
    assert caught.value.code == BleakGATTProtocolErrorCode.INVALID_ATTRIBUTE_VALUE_LENGTH


async def test_node_rejecting_a_downlink_surfaces_as_gatt_error(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    async def refuse(_data: bytes) -> None:
        raise ValueError("not a downlink I understand")

    node = await make_node("pump-07", on_downlink=refuse)

    async with await _client(find_node, gateway_spec, "pump-07") as client:
        with pytest.raises(BleakGATTProtocolError) as caught:
            await client.write_gatt_char(DOWNLINK_CHAR_UUID, b"\xff", response=True)

    assert caught.value.code == BleakGATTProtocolErrorCode.UNLIKELY_ERROR
    assert node.downlink_errors == 1


async def test_status_and_temperature_reads_return_node_values(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    statuses = iter([b"status-1", b"status-2"])
    node = await make_node("pump-07", read_status=lambda: next(statuses))
    node.set_temperature(-12.34)

    async with await _client(
        find_node, gateway_spec, "pump-07", services=[FIELDGATE_SERVICE_UUID, ESS_SERVICE_UUID]
    ) as client:
        assert await client.read_gatt_char(STATUS_CHAR_UUID) == b"status-1"
        assert await client.read_gatt_char(STATUS_CHAR_UUID) == b"status-2"
        raw = await client.read_gatt_char(ESS_TEMPERATURE_UUID)

    assert struct.unpack("<h", raw) == (-1234,)


async def test_service_filter_limits_discovery(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    await make_node("pump-07")

    async with await _client(
        find_node, gateway_spec, "pump-07", services=[FIELDGATE_SERVICE_UUID]
    ) as client:
        assert [s.uuid for s in client.services] == [FIELDGATE_SERVICE_UUID]


async def test_node_disconnect_fires_callback_and_reconnect_works(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    node = await make_node("pump-07")
    gone = asyncio.Event()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    device, _ = await find_node(gateway_spec, lambda _d, a: a.local_name == "pump-07")
    client = BleakClient(
        device, disconnected_callback=lambda _c: gone.set(), backend=BumbleClient, timeout=WAIT_S
    )
    await client.connect()
    await client.start_notify(UPLINK_CHAR_UUID, lambda _c, d: received.put_nowait(bytes(d)))
    await node.wait_for_subscriber()

    await node.disconnect()
    async with asyncio.timeout(WAIT_S):
        await gone.wait()
    assert not client.is_connected
    assert await node.notify_uplink(b"while-away") is False

    # The node advertises again; the same client object reconnects and resubscribes.
    await client.connect()
    await client.start_notify(UPLINK_CHAR_UUID, lambda _c, d: received.put_nowait(bytes(d)))
    await node.wait_for_subscriber()
    assert await node.notify_uplink(b"after-reconnect")
    async with asyncio.timeout(WAIT_S):
        assert await received.get() == b"after-reconnect"
    await client.disconnect()
    assert received.empty()


async def test_connect_to_silent_node_times_out_and_leaves_adapter_usable(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    node = await make_node("pump-07")
    device, _ = await find_node(gateway_spec, lambda _d, a: a.local_name == "pump-07")
    await node.stop()  # gone between the scan and the connect

    with pytest.raises(TimeoutError):
        await BleakClient(device, backend=BumbleClient, timeout=0.3).connect()

    await make_node("pump-08")
    async with await _client(find_node, gateway_spec, "pump-08") as client:
        assert client.is_connected


async def test_cancelled_connect_leaves_adapter_usable(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    node = await make_node("pump-07")
    device, _ = await find_node(gateway_spec, lambda _d, a: a.local_name == "pump-07")
    await node.stop()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await BleakClient(device, backend=BumbleClient, timeout=WAIT_S).connect()

    await make_node("pump-08")
    async with await _client(find_node, gateway_spec, "pump-08") as client:
        assert client.is_connected


async def test_one_central_serves_two_nodes_at_once(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    nodes = [await make_node("pump-01"), await make_node("pump-02")]
    received: list[bytes] = []
    all_in = asyncio.Event()

    def on_uplink(_char: BleakGATTCharacteristic, data: bytearray) -> None:
        received.append(bytes(data))
        if len(received) == 20:
            all_in.set()

    clients = [await _client(find_node, gateway_spec, node.node_id) for node in nodes]
    for client in clients:
        await client.connect()
    try:
        for node, client in zip(nodes, clients, strict=True):
            await client.start_notify(UPLINK_CHAR_UUID, on_uplink)
            await node.wait_for_subscriber()
        for i in range(10):
            for node in nodes:
                assert await node.notify_uplink(f"{node.node_id}/{i}".encode())
        await asyncio.gather(*(c.write_gatt_char(DOWNLINK_CHAR_UUID, b"ack") for c in clients))
        async with asyncio.timeout(WAIT_S):
            await all_in.wait()
    finally:
        for client in clients:
            await client.disconnect()

    for node in nodes:
        mine = [m for m in received if m.startswith(node.node_id.encode())]
        assert mine == [f"{node.node_id}/{i}".encode() for i in range(10)]


async def test_client_by_address_string_uses_the_named_transport(
    radio: LocalRadio, make_node: MakeNode, gateway_spec: str
) -> None:
    node = await make_node("pump-07")

    client = BleakClient(
        node.address, backend=BumbleClient, timeout=WAIT_S, bumble_transport=gateway_spec
    )
    async with client:
        assert client.services.get_service(FIELDGATE_SERVICE_UUID) is not None


async def test_bleak_retry_connector_connects_through_the_backend(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    await make_node("pump-07")
    device, _ = await find_node(gateway_spec, lambda _d, a: a.local_name == "pump-07")

    client = await establish_connection(BleakClient, device, "pump-07", backend=BumbleClient)
    try:
        assert client.services.get_service(FIELDGATE_SERVICE_UUID) is not None
    finally:
        await client.disconnect()


async def test_exception_in_notification_callback_does_not_stop_later_ones(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str, caplog: pytest.LogCaptureFixture
) -> None:
    node = await make_node("pump-07")
    received: asyncio.Queue[bytes] = asyncio.Queue()

    def on_uplink(_char: BleakGATTCharacteristic, data: bytearray) -> None:
        if data == b"poison":
            raise ValueError("cannot decode")
        received.put_nowait(bytes(data))

    async with await _client(find_node, gateway_spec, "pump-07") as client:
        await client.start_notify(UPLINK_CHAR_UUID, on_uplink)
        await node.wait_for_subscriber()
        assert await node.notify_uplink(b"poison")
        assert await node.notify_uplink(b"fine")
        async with asyncio.timeout(WAIT_S):
            assert await received.get() == b"fine"

    assert "notification callback failed" in caplog.text


async def test_cbor_messages_cross_gatt_as_chunks_both_ways(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    """The codecs on top of this transport: ReadingBatch up, Ack down, byte-exact."""
    batch = ReadingBatch(
        node_id="pump-07",
        boot_id=3,
        seq=1,
        time_base=TimeBase.UPTIME_MS,
        channels=(Channel("current", "A"), Channel("pressure", "bar")),
        samples=tuple(Sample(i * 100, (1.5 + i, 2.25 * i)) for i in range(100)),
    )
    ack = Ack("pump-07", boot_id=3, up_to_seq=batch.last_seq)
    node_rx, gateway_rx = ChunkDecoder(), ChunkDecoder()
    downlinks: asyncio.Queue[Message] = asyncio.Queue()
    uplinks: asyncio.Queue[Message] = asyncio.Queue()

    async def on_downlink(chunk: bytes) -> None:
        for item in node_rx.feed(chunk):
            assert isinstance(item, bytes)
            downlinks.put_nowait(decode_message(item))

    def on_uplink(_char: BleakGATTCharacteristic, chunk: bytearray) -> None:
        for item in gateway_rx.feed(chunk):
            assert isinstance(item, bytes)
            uplinks.put_nowait(decode_message(item))

    node = await make_node("pump-07", on_downlink=on_downlink)
    async with await _client(find_node, gateway_spec, "pump-07") as client:
        await client.start_notify(UPLINK_CHAR_UUID, on_uplink)
        await node.wait_for_subscriber()
        chunks = ChunkEncoder().split(encode_message(batch), node.max_uplink_bytes)
        assert len(chunks) > 1
        for chunk in chunks:
            assert await node.notify_uplink(chunk)
        async with asyncio.timeout(WAIT_S):
            assert await uplinks.get() == batch

        downlink = client.services.get_characteristic(DOWNLINK_CHAR_UUID)
        assert downlink is not None
        for chunk in ChunkEncoder().split(encode_message(ack), client.mtu_size - 3):
            await client.write_gatt_char(downlink, chunk, response=True)
        assert downlinks.get_nowait() == ack


async def test_link_lost_during_a_write_fails_the_write_without_cancelling_the_caller(
    make_node: MakeNode, find_node: FindNode, gateway_spec: str
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_node(_data: bytes) -> None:
        entered.set()
        await release.wait()

    node = await make_node("pump-07", on_downlink=slow_node)
    client = await _client(find_node, gateway_spec, "pump-07")
    await client.connect()

    async def write() -> BaseException | None:
        try:
            await client.write_gatt_char(DOWNLINK_CHAR_UUID, b"ack", response=True)
        except BleakError as exc:
            return exc
        return None

    async with asyncio.TaskGroup() as tasks:
        outcome = tasks.create_task(write(), name="test:write")
        await entered.wait()
        await node.disconnect()
    release.set()

    assert isinstance(outcome.result(), BleakError)
    assert not client.is_connected
