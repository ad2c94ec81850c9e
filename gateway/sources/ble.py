"""BLE source: scan continuously, one GATT connection task per node, beacons from adverts.

Only bleak's public API is used, with the Bumble backend (:mod:`gateway.ble`). A
connectable node streams uplink messages as chunked notifications (protocol §5.2) and
takes cumulative acks and commands as chunked writes to DOWNLINK; a beacon node puts a
reading in its advert's manufacturer data and cannot be acknowledged (the journal drops
the repeats).

Connection cap: at most ``max_connections`` links at once (a controller has a handful of
connection slots, and each link costs airtime). Nodes wait for a slot in the order they
were first seen. When nodes are waiting, a connected node gives its slot up after
``session_share_s`` (a time share) and queues again behind them, so every known node is
served over time; meanwhile it keeps its readings unacknowledged and sends them on its
next turn. ``session_share_s=None`` keeps a link for as long as it lasts (the rest wait).

Scan watchdog: a controller can stop reporting adverts without any error; after
``scan_watchdog_s`` without one, the scan is stopped and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from gateway.aio_compat import being_cancelled, checkpoint
from gateway.ble import BumbleClient, BumbleScanner, close_adapters
from gateway.config import BleConfig
from gateway.downlink import Downlinks
from gateway.errors import CodecError
from gateway.identity.config import ble_channel
from gateway.identity.gate import NodeGate
from gateway.ingest import Envelope, IngestQueue
from gateway.metrics import Metrics
from gateway.protocol.adv import decode_adv
from gateway.protocol.ble_chunks import ChunkDecoder, ChunkEncoder, max_chunk_for_mtu
from gateway.protocol.ble_layout import (
    ADV_COMPANY_ID,
    DOWNLINK_CHAR_UUID,
    FIELDGATE_SERVICE_UUID,
    UPLINK_CHAR_UUID,
)
from gateway.protocol.messages import Command, Message, Transport
from gateway.protocol.payload import encode_message
from gateway.retry import Backoff
from gateway.sources.common import AckMailbox, Admission, CommandOutbox, now_ms

_LOGGER = logging.getLogger(__name__)
_CONNECT_TIMEOUT_S = 10.0
_INBOX_SIZE = 256
_MAX_REMEMBERED_BEACONS = 4096
_BEACON_QUEUE_SIZE = 256
_COMMAND_QUEUE_SIZE = 16
DEFAULT_SESSION_SHARE_S = 30.0


def _connectable(advert: AdvertisementData) -> bool:
    # bleak's AdvertisementData has no connectable flag; the Bumble backend hands its
    # Advertisement over as platform_data. Other backends: assume connectable.
    platform = advert.platform_data[0] if advert.platform_data else None
    return bool(getattr(platform, "is_connectable", True))


class _Disconnected(Exception):
    pass


class _SlotYielded(Exception):
    """The link ends to let a waiting node have its connection slot."""


class _NodeLink:
    """The downlink side of one node's live GATT connection (for :class:`Downlinks`)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.commands = CommandOutbox(f"BLE {node}", _COMMAND_QUEUE_SIZE)

    @property
    def name(self) -> str:
        return f"source:ble:{self.node}"

    def send_command(self, command: Command) -> bool:
        return self.commands.offer(command)


class BleSource:
    def __init__(
        self,
        config: BleConfig,
        queue: IngestQueue,
        metrics: Metrics,
        allowed_nodes: frozenset[str] = frozenset(),
        *,
        downlinks: Downlinks | None = None,
        session_share_s: float | None = DEFAULT_SESSION_SHARE_S,
        gate: NodeGate | None = None,
    ) -> None:
        self._config = config
        self._downlinks = downlinks
        self._share_s = session_share_s
        self._waiting = 0
        self._queue = queue
        self._admission = Admission(Transport.BLE, metrics, allowed_nodes, gate)
        self._nodes = frozenset(config.nodes)
        self._slots = asyncio.Semaphore(config.max_connections)
        self._sightings: dict[str, tuple[BLEDevice, int | None]] = {}
        self._mailboxes: dict[str, AckMailbox] = {}
        self._beacons: asyncio.Queue[Envelope] = asyncio.Queue(_BEACON_QUEUE_SIZE)
        self._last_beacon: dict[str, tuple[int, int]] = {}
        self._beacon_names: set[str] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._last_advert = 0.0
        self._heard_since_restart = True
        self.ready = asyncio.Event()
        self.connections = 0  # links made so far
        self.connected = 0  # links up now
        self.max_connected = 0
        self.slot_yields = 0
        self.scan_restarts = 0
        self.dropped_notifications = 0
        self.dropped_beacons = 0

    @property
    def name(self) -> str:
        return f"source:ble:{self._config.transport}"

    def stack_kwargs(self, role: str) -> dict[str, Any]:
        """bleak keyword arguments for the configured stack: the code above them is the same
        for BlueZ (bleak's own Linux backend) and Bumble (our backend, also used in tests)."""
        adapter = self._config.bluez_adapter
        if adapter is not None:
            return {"adapter": adapter}
        if role == "scanner":
            return {"backend": BumbleScanner, "bumble_transport": self._config.transport}
        return {"backend": BumbleClient}

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._forward_beacons(), name=f"{self.name}:beacons")
                await self._scan_forever()
        finally:
            self._tg = None
            self.ready.clear()
            # Disconnects every link and releases the controller (no Bumble tasks left).
            await close_adapters()

    # -- scanning -------------------------------------------------------------------------

    async def _scan_forever(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(max_s=self._config.reconnect_max_s)
        watchdog_s = self._config.scan_watchdog_s
        while True:
            scanner = BleakScanner(self._on_advert, **self.stack_kwargs("scanner"))
            try:
                await scanner.start()
            except BleakError as exc:
                delay = backoff.next_delay()
                _LOGGER.warning("ble: cannot scan (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            checkpoint()
            backoff.reset()
            self._last_advert = loop.time()
            self.ready.set()
            try:
                # A controller can stop reporting without an error; silence restarts the scan.
                while True:
                    await asyncio.sleep(watchdog_s)
                    if loop.time() - self._last_advert >= watchdog_s:
                        break
                self.scan_restarts += 1
                # Once per silent stretch, and not as a warning: with every node connected and
                # no beacon around the air is legitimately quiet (restarts are counted).
                log = _LOGGER.info if self._heard_since_restart else _LOGGER.debug
                log("ble: no advert for %.1f s; restarting the scan", watchdog_s)
                self._heard_since_restart = False
            finally:
                self.ready.clear()
                with contextlib.suppress(BleakError):
                    await scanner.stop()

    def _on_advert(self, device: BLEDevice, advert: AdvertisementData) -> None:
        self._last_advert = asyncio.get_running_loop().time()
        self._heard_since_restart = True
        name = advert.local_name
        beacon = advert.manufacturer_data.get(ADV_COMPANY_ID)
        if beacon is not None:
            self._on_beacon(device, advert, beacon)
            return
        if name is None or name in self._beacon_names or not _connectable(advert):
            return  # beacons are read from adverts, never connected to
        wanted = (
            name in self._nodes
            if self._nodes
            else FIELDGATE_SERVICE_UUID in (advert.service_uuids or [])
        )
        if not wanted:
            return
        self._sightings[name] = (device, advert.rssi)
        if name not in self._mailboxes and self._tg is not None:
            self._mailboxes[name] = AckMailbox()
            self._tg.create_task(self._node_loop(name), name=f"source:ble:{name}")

    def _on_beacon(self, device: BLEDevice, advert: AdvertisementData, data: bytes) -> None:
        where = f"ble:{advert.local_name or device.address}"
        try:
            msg = decode_adv(data, advert.local_name or "")
        except CodecError as exc:
            self._admission.malformed(where, exc)
            return
        if msg.node_id in self._nodes:
            self._beacon_names.add(msg.node_id)  # a configured name that turned out a beacon
        key = (msg.boot_id, msg.seq)
        if self._last_beacon.get(msg.node_id) == key:
            return  # beacons repeat each reading; the journal would drop the copy anyway
        if not self._admission.admit(msg, where, ble_channel(device.address)):
            return
        if len(self._last_beacon) >= _MAX_REMEMBERED_BEACONS:
            # Only a repeat filter: forgetting lets a few copies through to the journal's
            # dedupe, while a neighbourhood of made-up node ids cannot grow it without bound.
            self._last_beacon.clear()
        self._last_beacon[msg.node_id] = key
        try:
            self._beacons.put_nowait(
                Envelope(msg, Transport.BLE, now_ms(), None, rssi_dbm=advert.rssi)
            )
        except asyncio.QueueFull:
            self.dropped_beacons += 1

    async def _forward_beacons(self) -> None:
        while True:
            await self._queue.put(await self._beacons.get())

    # -- connections ----------------------------------------------------------------------

    async def _node_loop(self, node: str) -> None:
        backoff = Backoff(max_s=self._config.reconnect_max_s)
        while True:
            yielded = False
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
            try:
                device, _rssi = self._sightings[node]
                await self._session(node, device, backoff)
            except* _SlotYielded:
                yielded = True
            except* (BleakError, TimeoutError, _Disconnected) as group:
                if being_cancelled():
                    raise asyncio.CancelledError from None
                _LOGGER.info("%s: ble link ended (%s)", node, group.exceptions[0])
            finally:
                self._slots.release()
            if not yielded:
                await backoff.wait()

    async def _session(self, node: str, device: BLEDevice, backoff: Backoff) -> None:
        gone = asyncio.Event()
        client = BleakClient(
            device,
            disconnected_callback=lambda _client: gone.set(),
            timeout=_CONNECT_TIMEOUT_S,
            **self.stack_kwargs("client"),
        )
        inbox: asyncio.Queue[bytes] = asyncio.Queue(_INBOX_SIZE)

        def on_notify(_char: object, data: bytearray) -> None:
            try:
                inbox.put_nowait(bytes(data))
            except asyncio.QueueFull:
                # Not acked, so the node resends it; counted, not logged per message.
                self.dropped_notifications += 1

        link = _NodeLink(node)
        await client.connect()
        checkpoint()
        self.connected += 1
        self.max_connected = max(self.max_connected, self.connected)
        try:
            await client.start_notify(UPLINK_CHAR_UUID, on_notify)
            checkpoint()
            self.connections += 1
            backoff.reset()
            _LOGGER.info("%s: ble connected (%s)", node, device.address)
            if self._downlinks is not None:
                self._downlinks.register(node, link)
            # One encoder per connection (chunk counters restart with each link) and one
            # message's chunks at a time on the wire, whether an ack or a command.
            encoder = ChunkEncoder()
            write_lock = asyncio.Lock()

            async def write(msg: Message) -> None:
                async with write_lock:
                    max_chunk = max_chunk_for_mtu(client.mtu_size)
                    for chunk in encoder.split(encode_message(msg), max_chunk):
                        await client.write_gatt_char(DOWNLINK_CHAR_UUID, chunk, response=True)
                        checkpoint()

            async with asyncio.TaskGroup() as tg:
                tg.create_task(
                    self._receive(node, device.address, inbox), name=f"source:ble:{node}:rx"
                )
                tg.create_task(self._send_acks(node, write), name=f"source:ble:{node}:acks")
                tg.create_task(self._send_commands(link, write), name=f"source:ble:{node}:commands")
                await self._hold(gone)
        finally:
            self.connected -= 1
            if self._downlinks is not None:
                self._downlinks.unregister(node, link)
            link.commands.drop_all()
            with contextlib.suppress(BleakError):
                await client.disconnect()

    async def _hold(self, gone: asyncio.Event) -> None:
        """Until the peer goes, or until the time share ends while another node waits."""
        while True:
            try:
                async with asyncio.timeout(self._share_s):
                    await gone.wait()
            except TimeoutError:
                if self._waiting:
                    self.slot_yields += 1
                    raise _SlotYielded from None
                continue
            raise _Disconnected("peer disconnected")

    async def _receive(self, node: str, address: str, inbox: asyncio.Queue[bytes]) -> None:
        where = f"ble:{node}"
        channel = ble_channel(address)
        decoder = ChunkDecoder()
        mailbox = self._mailboxes[node]
        while True:
            data = await inbox.get()
            rx = now_ms()
            for item in decoder.feed(data):
                msg = self._admission.accept_frame(item, where, channel)
                if msg is None:
                    continue
                rssi = self._sightings[node][1]
                await self._queue.put(Envelope(msg, Transport.BLE, rx, link=mailbox, rssi_dbm=rssi))

    async def _send_acks(self, node: str, write: Callable[[Message], Awaitable[None]]) -> None:
        mailbox = self._mailboxes[node]
        while True:
            for ack in await mailbox.take():
                await write(ack)

    async def _send_commands(
        self, link: _NodeLink, write: Callable[[Message], Awaitable[None]]
    ) -> None:
        while True:
            command = await link.commands.get()
            await write(command)
            _LOGGER.info(
                "%s: command %d (%s) written", link.node, command.cmd_id, command.kind.name
            )
