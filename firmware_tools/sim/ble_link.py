"""A node on BLE: the fieldgate GATT service on a Bumble peripheral.

Connectable mode: every uplink message is split into chunks (docs/protocol.md §5.2)
sized for the negotiated MTU and sent as UPLINK notifications, back to back; the
latest Status is what a STATUS read returns; chunked Ack/Command writes to DOWNLINK
are reassembled and go to the node logic. While no gateway is subscribed,
notifications have nowhere to go: they are counted as dropped and the node's resend
timer brings them back. Chunk counters restart whenever no central is connected, so
each connection starts afresh as §5.2 asks.

Beacon mode (``beacon=True``): no connection, no acks; the newest sample of each new
reading batch is put in the advert's manufacturer data
(:func:`gateway.protocol.adv.encode_adv`). Resends of a batch are not advertised again:
a beacon reading gets one advert seq, however often the node logic repeats it.
"""

from __future__ import annotations

import asyncio
import logging

from firmware_tools.sim.ble_peripheral import BlePeripheral
from firmware_tools.sim.links import DownlinkHandler, LinkStats, Outbox
from gateway.errors import CodecError
from gateway.protocol.adv import ADV_CHANNEL_TYPES, ADV_MAX_CHANNELS, encode_adv
from gateway.protocol.ble_chunks import ChunkDecoder, ChunkEncoder
from gateway.protocol.messages import Ack, Command, ReadingBatch, Status, UplinkMessage
from gateway.protocol.payload import decode_message, encode_message

_LOGGER = logging.getLogger(__name__)


class BleLink:
    """One node's BLE side. ``await run(handler)`` in a task; cancel to power the radio off."""

    kind = "ble"

    def __init__(
        self,
        node_id: str,
        *,
        transport: str,
        beacon: bool = False,
        queue_size: int = 64,
        max_chunk_bytes: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.transport = transport
        self.beacon = beacon
        self.stats = LinkStats()
        self.ready = asyncio.Event()
        self._outbox = Outbox(self.stats, queue_size)
        self._status = b""
        self._handler: DownlinkHandler | None = None
        self.peripheral: BlePeripheral | None = None
        self._beacon_seq = 0
        self._beacon_newest: tuple[int, int] | None = None  # (boot_id, seq) advertised last
        self._encoder = ChunkEncoder()
        self._decoder = ChunkDecoder()
        self.chunks_out = 0
        # Cap on a notification's size below ATT_MTU - 3, as firmware with small buffers
        # has (20 = the default MTU's); None: use all the negotiated MTU allows.
        self.max_chunk_bytes = max_chunk_bytes

    @property
    def address(self) -> str:
        if self.peripheral is None:
            return f"ble:{self.node_id} (not advertising)"
        return f"{self.peripheral.address} ({'beacon' if self.beacon else 'gatt'})"

    def offer(self, msg: UplinkMessage) -> None:
        if isinstance(msg, Status):
            self._status = encode_message(msg)
        self._outbox.put(msg)

    async def run(self, on_downlink: DownlinkHandler) -> None:
        self._handler = on_downlink
        first = b""
        while self.beacon and not first:
            # A beacon goes on air with its first reading: an advert without one would look
            # like a connectable node (Bumble's virtual link reports every advert connectable).
            first = self._beacon_payload(await self._outbox.get())
        peripheral = BlePeripheral(
            self.transport,
            self.node_id,
            connectable=not self.beacon,
            on_downlink=self._on_downlink,
            read_status=lambda: self._status,
            advert_payload=first,
        )
        await peripheral.start()
        self.peripheral = peripheral
        self.stats.connects += 1
        self._count_advert(first)
        self.ready.set()
        try:
            while True:
                msg = await self._outbox.get()
                if self.beacon:
                    payload = self._beacon_payload(msg)
                    if payload:
                        await peripheral.set_advert_payload(payload)
                        self._count_advert(payload)
                    continue
                payload = encode_message(msg)
                delivered = await self._notify_chunks(peripheral, payload)
                if delivered:
                    self.stats.messages_out += 1
                    self.stats.bytes_out += len(payload)
                else:
                    self.stats.dropped += 1
        finally:
            self.ready.clear()
            self.peripheral = None
            await peripheral.stop()

    async def _notify_chunks(self, peripheral: BlePeripheral, payload: bytes) -> bool:
        """Send one message as chunks; False if it could not all go out (the node resends)."""
        if not peripheral.connected:
            # A new connection starts with fresh chunk counters (§5.2).
            self._encoder = ChunkEncoder()
            self._decoder = ChunkDecoder()
            return False
        room = peripheral.max_uplink_bytes
        if self.max_chunk_bytes is not None:
            room = min(room, self.max_chunk_bytes)
        for chunk in self._encoder.split(payload, room):
            try:
                if not await peripheral.notify_uplink(chunk):
                    return False
            except ValueError:
                return False  # the MTU shrank under us (a new central): resent later
            self.chunks_out += 1
        return True

    def _count_advert(self, payload: bytes) -> None:
        if payload:
            self.stats.messages_out += 1
            self.stats.bytes_out += len(payload)

    def _beacon_payload(self, msg: UplinkMessage) -> bytes:
        """Manufacturer data for a new reading batch; empty for anything else."""
        if not isinstance(msg, ReadingBatch):
            return b""  # beacons carry readings only
        newest = self._beacon_newest
        if newest is not None and newest[0] == msg.boot_id and msg.seq <= newest[1]:
            return b""  # a resend (nothing acks a beacon): advertised already
        self._beacon_newest = (msg.boot_id, msg.seq)
        sample = msg.samples[-1]
        # Adverts use a 16-bit boot id and seq; derive them from the node's so they move
        # together (a new boot gives a new advert boot id).
        self._beacon_seq = self._beacon_seq % 0xFFFF + 1
        return encode_adv(
            boot_id=msg.boot_id & 0xFFFF,
            seq=self._beacon_seq,
            uptime_s=min(0xFF_FFFF, max(0, sample.t // 1000)),
            values=_beacon_values(msg, sample.values),
        )

    async def _on_downlink(self, data: bytes) -> None:
        for item in self._decoder.feed(data):
            if isinstance(item, CodecError):
                self.stats.bad_in += 1
                continue
            try:
                msg = decode_message(item)
            except CodecError:
                self.stats.bad_in += 1
                raise  # the gateway sees a GATT error for the write that completed it
            if not isinstance(msg, Ack | Command):
                self.stats.bad_in += 1
                continue
            self.stats.messages_in += 1
            if self._handler is not None:
                self._handler(msg)


_BEACON_NAMES = {t.name: t.unit for t in ADV_CHANNEL_TYPES.values()}
# Units a beacon channel type uses, from the units the node measures in.
_TO_BEACON_UNIT = {("bar", "hPa"): 1000.0, ("l/min", "L/min"): 1.0}


def _beacon_values(batch: ReadingBatch, values: tuple[float, ...]) -> list[tuple[str, float]]:
    """The first few channels a beacon advert has a type for, in that type's unit."""
    out: list[tuple[str, float]] = []
    for channel, value in zip(batch.channels, values, strict=True):
        unit = _BEACON_NAMES.get(channel.name)
        if unit is None or len(out) >= ADV_MAX_CHANNELS:
            continue
        factor = 1.0 if unit == channel.unit else _TO_BEACON_UNIT.get((channel.unit, unit))
        if factor is not None:
            out.append((channel.name, value * factor))
    return out
