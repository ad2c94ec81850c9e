"""SMP over BLE for a simulated node: the SMP GATT service on its Bumble peripheral.

The service and characteristic are the ones every MCUmgr client looks for (Zephyr's
``CONFIG_MCUMGR_TRANSPORT_BT``): service ``8D53DC1D-1DB7-4CD3-868B-8A527460AA84`` with one
characteristic ``DA2E7828-FBCE-4E01-AE9E-261174997C48`` (write without response + notify).
A client writes a request in as many writes as its ATT MTU needs; the node reassembles it by
the length in the 8-byte SMP header, answers through :class:`SmpServer` and notifies the
response in ``ATT_MTU - 3`` byte pieces. No other framing: BLE carries SMP messages bare.

:class:`SmpGattService` is the service alone (add ``.service`` to any peripheral's
``extra_services``); :class:`SmpBleLink` is a node that serves only SMP.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bumble import core
from bumble.device import Connection
from bumble.gatt import Characteristic, CharacteristicValue, Service
from smp import header as smphdr

from firmware_tools.sim.ble_peripheral import BlePeripheral
from firmware_tools.sim.smp_server import SmpServer

_LOGGER = logging.getLogger(__name__)

SMP_SERVICE_UUID = "8D53DC1D-1DB7-4CD3-868B-8A527460AA84"
SMP_CHARACTERISTIC_UUID = "DA2E7828-FBCE-4E01-AE9E-261174997C48"
_NOTIFY_OVERHEAD = 3  # ATT opcode + handle
_MAX_ATTRIBUTE_BYTES = 512

_Props = Characteristic.Properties


class SmpGattService:
    """The SMP GATT service of one node. ``await run()`` in a task to answer requests.

    Requests are answered one at a time, in order, from a bounded queue; when it is full a
    request is dropped and counted (the client times out and retries, as with a node too
    busy to take it).
    """

    def __init__(
        self,
        server: SmpServer,
        *,
        queue_size: int = 4,
        on_reset: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.server = server
        self._on_reset = on_reset
        self.characteristic = Characteristic[bytes](
            SMP_CHARACTERISTIC_UUID,
            _Props.WRITE_WITHOUT_RESPONSE | _Props.NOTIFY,
            Characteristic.Permissions.WRITEABLE,
            CharacteristicValue(write=self._on_write),
        )
        self.service = Service(SMP_SERVICE_UUID, [self.characteristic])
        self.requests = 0
        self.dropped = 0  # requests lost to a full queue, an oversize header or a reboot
        self._partial: dict[int, bytearray] = {}  # per connection handle
        self._queue: asyncio.Queue[tuple[Connection, bytes]] = asyncio.Queue(queue_size)
        self._limit = smphdr.Header.SIZE + max(server.buf_size, 512)

    async def run(self) -> None:
        """Answer queued requests until cancelled."""
        while True:
            connection, request = await self._queue.get()
            self.requests += 1
            reply = await asyncio.to_thread(self.server.handle, request)
            if reply.response:
                await self._notify(connection, reply.response)
            if reply.reset:
                _LOGGER.info("%s: SMP reset", self.server.node_id)
                if self._on_reset is not None:
                    await self._on_reset()
                else:
                    await asyncio.to_thread(self.server.reboot)
                # A rebooting node has heard nothing meanwhile.
                while not self._queue.empty():
                    self._queue.get_nowait()
                    self.dropped += 1
                self._partial.clear()

    def _on_write(self, connection: Connection, value: bytes) -> None:
        # Synchronous on purpose: fragments are appended in the order they arrived.
        buffer = self._partial.setdefault(connection.handle, bytearray())
        buffer.extend(value)
        while len(buffer) >= smphdr.Header.SIZE:
            length = int.from_bytes(buffer[2:4], "big")
            size = smphdr.Header.SIZE + length
            if size > self._limit:
                # Not a request this node can hold: resynchronise on the next write.
                self.dropped += 1
                buffer.clear()
                return
            if len(buffer) < size:
                return
            request = bytes(buffer[:size])
            del buffer[:size]
            try:
                self._queue.put_nowait((connection, request))
            except asyncio.QueueFull:
                self.dropped += 1

    async def _notify(self, connection: Connection, response: bytes) -> None:
        # Within ATT_MTU - 3, and within the 512 bytes an attribute value may have.
        room = min(connection.att_mtu - _NOTIFY_OVERHEAD, _MAX_ATTRIBUTE_BYTES)
        try:
            for start in range(0, len(response), room):
                await connection.device.notify_subscriber(
                    connection, self.characteristic, response[start : start + room]
                )
        except core.BaseBumbleError as exc:
            _LOGGER.info("%s: SMP response lost: %s", self.server.node_id, exc)


class SmpBleLink:
    """A node that serves SMP over BLE on controller ``transport`` (an HCI spec).

    ``await run()`` in a task: advertises as the node id and answers SMP until cancelled.
    An ``os reset`` drops the link and restarts the radio once the node has rebooted.
    """

    kind = "smp-ble"

    def __init__(
        self,
        server: SmpServer,
        *,
        transport: str,
        advertising_interval_ms: float = 100.0,
        reset_delay_s: float = 0.1,
    ) -> None:
        self.server = server
        self.node_id = server.node_id
        self.reset_delay_s = reset_delay_s
        self.smp = SmpGattService(server, on_reset=self._reset)
        self.peripheral = BlePeripheral(
            transport,
            self.node_id,
            advertising_interval_ms=advertising_interval_ms,
            extra_services=[self.smp.service],
        )
        self.ready = asyncio.Event()

    @property
    def address(self) -> str:
        """What a host connects to: the advertised name (bleak finds it by name)."""
        return self.node_id

    async def _reset(self) -> None:
        """A reset as a real node does it: the link drops, the radio is silent while the
        node boots (and self-tests a new model), then it advertises again."""
        # Zephyr waits CONFIG_MCUMGR_GRP_OS_RESET_MS after the response for it to go out.
        await asyncio.sleep(self.reset_delay_s)
        self.ready.clear()
        await self.peripheral.stop()
        await asyncio.to_thread(self.server.reboot)
        await self.peripheral.start()
        self.ready.set()

    async def run(self) -> None:
        await self.peripheral.start()
        try:
            self.ready.set()
            await self.smp.run()
        finally:
            self.ready.clear()
            await self.peripheral.stop()
