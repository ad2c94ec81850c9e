"""A node on BLE: the fieldgate GATT service on a Bumble peripheral.

Connectable mode: every uplink message is one CBOR notification on UPLINK; the
latest Status is what a STATUS read returns; Ack/Command CBOR written to DOWNLINK
go to the node logic. While no gateway is subscribed, notifications have nowhere
to go: they are counted as dropped and the node's resend timer brings them back.

Beacon mode (``beacon=True``): no connection, no acks; each reading batch's newest
sample is put in the advert's manufacturer data (:func:`gateway.codecs.adv.encode_adv`).
"""

from __future__ import annotations

import asyncio
import logging

from firmware_tools.sim.ble_peripheral import BlePeripheral
from firmware_tools.sim.links import DownlinkHandler, LinkStats, Outbox
from gateway.codecs.adv import ADV_CHANNEL_TYPES, ADV_MAX_CHANNELS, encode_adv
from gateway.codecs.payload import decode_message, encode_message
from gateway.errors import CodecError
from gateway.models import Ack, Command, ReadingBatch, Status, UplinkMessage

_LOGGER = logging.getLogger(__name__)


class BleLink:
    """One node's BLE side. ``await run(handler)`` in a task; cancel to power the radio off."""

    kind = "ble"

    def __init__(
        self, node_id: str, *, transport: str, beacon: bool = False, queue_size: int = 64
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
        peripheral = BlePeripheral(
            self.transport,
            self.node_id,
            connectable=not self.beacon,
            on_downlink=self._on_downlink,
            read_status=lambda: self._status,
        )
        await peripheral.start()
        self.peripheral = peripheral
        self.stats.connects += 1
        self.ready.set()
        try:
            while True:
                msg = await self._outbox.get()
                if self.beacon:
                    await self._advertise(peripheral, msg)
                    continue
                payload = encode_message(msg)
                try:
                    delivered = await peripheral.notify_uplink(payload)
                except ValueError:
                    delivered = False  # larger than one notification at this MTU
                if delivered:
                    self.stats.messages_out += 1
                    self.stats.bytes_out += len(payload)
                else:
                    self.stats.dropped += 1
        finally:
            self.ready.clear()
            self.peripheral = None
            await peripheral.stop()

    async def _advertise(self, peripheral: BlePeripheral, msg: UplinkMessage) -> None:
        if not isinstance(msg, ReadingBatch):
            return  # beacons carry readings only
        sample = msg.samples[-1]
        # Adverts use a 16-bit boot id and seq; derive them from the node's so they move
        # together (a new boot gives a new advert boot id).
        self._beacon_seq = self._beacon_seq % 0xFFFF + 1
        payload = encode_adv(
            boot_id=msg.boot_id & 0xFFFF,
            seq=self._beacon_seq,
            uptime_s=min(0xFF_FFFF, max(0, sample.t // 1000)),
            values=_beacon_values(msg, sample.values),
        )
        await peripheral.set_advert_payload(payload)
        self.stats.messages_out += 1
        self.stats.bytes_out += len(payload)

    async def _on_downlink(self, data: bytes) -> None:
        try:
            msg = decode_message(data)
        except CodecError:
            self.stats.bad_in += 1
            raise
        if not isinstance(msg, Ack | Command):
            self.stats.bad_in += 1
            return
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
