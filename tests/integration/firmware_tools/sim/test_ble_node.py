"""A simulated BLE node (Bumble peripheral) read by bleak through the Bumble backend: its
uplinks and the downlinks it takes are chunked as docs/protocol.md §5.2 says."""

from __future__ import annotations

import asyncio

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from firmware_tools.sim.fleet import SimConfig, Simulator
from gateway.ble import BumbleClient, BumbleScanner, close_adapters
from gateway.ble.radio import LocalRadio
from gateway.protocol.ble_chunks import ChunkDecoder, ChunkEncoder, max_chunk_for_mtu
from gateway.protocol.ble_layout import DOWNLINK_CHAR_UUID, STATUS_CHAR_UUID, UPLINK_CHAR_UUID
from gateway.protocol.messages import Ack, ReadingBatch, Status, UplinkMessage
from gateway.protocol.payload import decode_message, encode_message

pytestmark = pytest.mark.timeout(60)
WAIT_S = 10.0


async def find(spec: str, node_id: str) -> BLEDevice:
    found: asyncio.Future[BLEDevice] = asyncio.get_running_loop().create_future()

    def on_advert(device: BLEDevice, advert: AdvertisementData) -> None:
        if not found.done() and advert.local_name == node_id:
            found.set_result(device)

    scanner = BleakScanner(on_advert, backend=BumbleScanner, bumble_transport=spec)
    async with scanner, asyncio.timeout(WAIT_S):
        return await found


async def test_ble_node_notifies_chunked_uplinks_and_takes_chunked_acks() -> None:
    async with LocalRadio(2) as radio:
        cfg = SimConfig(
            nodes=1,
            transports=("ble",),
            ble_transport=radio.specs[1],
            rate_hz=20.0,
            batch_size=5,
            resend_timeout_ms=500,
            status_interval_ms=60_000,
        )
        try:
            async with Simulator(cfg) as sim:
                await sim.wait_ready()
                device = await find(radio.specs[0], "pump-01")
                received: list[UplinkMessage] = []
                queue: asyncio.Queue[UplinkMessage] = asyncio.Queue()
                chunks: list[bytes] = []
                decoder = ChunkDecoder()
                encoder = ChunkEncoder()

                def on_uplink(_char: BleakGATTCharacteristic, data: bytearray) -> None:
                    chunks.append(bytes(data))
                    for item in decoder.feed(data):
                        assert isinstance(item, bytes), item
                        msg = decode_message(item)
                        assert isinstance(msg, ReadingBatch | Status)
                        queue.put_nowait(msg)

                client = BleakClient(device, backend=BumbleClient, timeout=WAIT_S)
                async with client:
                    await client.start_notify(UPLINK_CHAR_UUID, on_uplink)
                    async with asyncio.timeout(WAIT_S):
                        while sum(isinstance(m, ReadingBatch) for m in received) < 5:
                            msg = await queue.get()
                            received.append(msg)
                            ack = Ack(msg.node_id, msg.boot_id, msg.last_seq)
                            # Small chunks, so that the node must reassemble the ack.
                            for chunk in encoder.split(encode_message(ack), 12):
                                await client.write_gatt_char(
                                    DOWNLINK_CHAR_UUID, chunk, response=True
                                )
                    max_chunk = max_chunk_for_mtu(client.mtu_size)
                    status = decode_message(bytes(await client.read_gatt_char(STATUS_CHAR_UUID)))
                stats = sim.stats()["pump-01"]
        finally:
            await close_adapters()

    assert isinstance(status, Status)
    assert status.node_id == "pump-01"
    assert stats["acked"] >= 5
    assert stats["link_messages_in"] >= 5
    assert stats["link_bad_in"] == 0
    # Every notification is one chunk within the MTU, and they reassemble without a loss.
    assert all(len(c) <= max_chunk for c in chunks)
    assert decoder.messages_bad == 0
    assert decoder.messages_ok >= len(received)
