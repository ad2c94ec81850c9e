"""A simulated fieldgate BLE node: a Bumble peripheral serving the fieldgate GATT layout.

It attaches to one HCI controller named by a transport spec (``local:...`` from an
in-process :class:`gateway.ble.radio.LocalRadio`, ``tcp-client:...`` from a radio
process) and behaves like a node's BLE stack: it advertises, serves the layout of
:mod:`gateway.protocol.ble_layout` and moves opaque payload bytes. What those bytes mean
(CBOR uplink messages, Ack/Command downlinks) is the caller's business.

Two modes:

* connectable (default): advertises its node id and the fieldgate service UUID; a
  gateway connects, subscribes to UPLINK, reads STATUS, writes DOWNLINK.
* beacon (``connectable=False``): non-connectable adverts whose manufacturer data
  (company ``ADV_COMPANY_ID``) is the payload given to :meth:`set_advert_payload`.

Adverts use extended advertising PDUs so that a 32-character node id, the 128-bit
service UUID and a beacon payload fit in one advert.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from bumble import att, core, data_types, hci
from bumble.core import UUID, AdvertisingData
from bumble.device import (
    AdvertisingEventProperties,
    AdvertisingParameters,
    AdvertisingSet,
    Connection,
    Device,
)
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.host import Host
from bumble.transport.common import Transport

from gateway.ble.transport import open_hci
from gateway.protocol.adv import encode_ess_temperature
from gateway.protocol.ble_layout import (
    ADV_COMPANY_ID,
    DOWNLINK_CHAR_UUID,
    ESS_SERVICE_UUID,
    ESS_TEMPERATURE_UUID,
    FIELDGATE_SERVICE_UUID,
    STATUS_CHAR_UUID,
    UPLINK_CHAR_UUID,
)

_LOGGER = logging.getLogger(__name__)

# One HCI LE Set Extended Advertising Data command carries at most this much.
MAX_ADVERT_BYTES = 251
_NOTIFY_OVERHEAD = 3  # ATT opcode + handle

DownlinkHandler = Callable[[bytes], Awaitable[None]]

_Props = Characteristic.Properties
_Perms = Characteristic.Permissions


def static_address(node_id: str) -> hci.Address:
    """The node's BLE address: a random static address derived from its id, the same at every
    start, as a real node's (the gateway pins a node id to its address)."""
    raw = bytearray(hashlib.sha256(node_id.encode()).digest()[:6])
    raw[0] |= 0xC0  # the two top bits of a random static address
    return hci.Address(":".join(f"{b:02X}" for b in raw), hci.Address.RANDOM_DEVICE_ADDRESS)


class BlePeripheral:
    """One simulated node's BLE side. ``await start()`` ... ``await stop()``."""

    def __init__(
        self,
        transport: str,
        node_id: str,
        *,
        connectable: bool = True,
        on_downlink: DownlinkHandler | None = None,
        read_status: Callable[[], bytes] | None = None,
        advert_payload: bytes = b"",
        advertising_interval_ms: float = 100.0,
        extra_services: Sequence[Service] = (),
    ) -> None:
        self.transport_spec = transport
        self.node_id = node_id
        self.connectable = connectable
        self.on_downlink = on_downlink
        self._read_status = read_status
        self._status = b""
        self._temperature = encode_ess_temperature(None)
        self._advert_payload = advert_payload
        self._interval_ms = advertising_interval_ms
        self._transport: Transport | None = None
        self._device: Device | None = None
        self._advertising: AdvertisingSet | None = None
        self._subscribed = asyncio.Event()
        self._lost = False
        self.downlink_errors = 0
        self._check_advert_size(advert_payload)

        self._uplink = Characteristic[bytes](UPLINK_CHAR_UUID, _Props.NOTIFY, _Perms.READABLE, b"")
        self._uplink.on(Characteristic.EVENT_SUBSCRIPTION, self._on_uplink_subscription)
        temperature = Characteristic[bytes](
            ESS_TEMPERATURE_UUID,
            _Props.READ,
            _Perms.READABLE,
            CharacteristicValue(read=lambda _connection: self._temperature),
        )
        self._services = [
            Service(
                FIELDGATE_SERVICE_UUID,
                [
                    self._uplink,
                    Characteristic[bytes](
                        STATUS_CHAR_UUID,
                        _Props.READ,
                        _Perms.READABLE,
                        CharacteristicValue(read=lambda _connection: self._status_value()),
                    ),
                    Characteristic[bytes](
                        DOWNLINK_CHAR_UUID,
                        _Props.WRITE,
                        _Perms.WRITEABLE,
                        CharacteristicValue(write=self._on_downlink_write),
                    ),
                ],
            ),
            Service(ESS_SERVICE_UUID, [temperature]),
            # Other GATT services of the node (e.g. SMP, firmware_tools.sim.smp_ble).
            *extra_services,
        ]

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Attach to the controller, serve GATT (if connectable) and start advertising."""
        transport = await open_hci(self.transport_spec)
        device = Device(
            name=self.node_id,
            address=static_address(self.node_id),
            host=Host(transport.source, transport.sink),
        )
        self._transport, self._device = transport, device
        if self.connectable:
            device.add_services(self._services)
        device.on(Device.EVENT_CONNECTION, self._on_connection)
        await device.power_on()
        transport.source.terminated.add_done_callback(self._on_transport_lost)
        self._advertising = await device.create_advertising_set(
            advertising_parameters=AdvertisingParameters(
                advertising_event_properties=AdvertisingEventProperties(
                    is_connectable=self.connectable, is_scannable=False, is_legacy=False
                ),
                primary_advertising_interval_min=self._interval_ms,
                primary_advertising_interval_max=self._interval_ms,
            ),
            advertising_data=self._advertising_data(),
            # A node advertises again as soon as its gateway drops it.
            auto_restart=self.connectable,
        )
        _LOGGER.info("%s: advertising as %s", self.node_id, device.random_address)

    async def stop(self) -> None:
        """Drop links, stop advertising and detach from the controller."""
        device, transport = self._device, self._transport
        self._device = self._transport = self._advertising = None
        if device is not None:
            if not self._lost:
                await self._disconnect_all(device)
            await device.power_off()
        if transport is not None:
            await transport.close()

    # -- what the node does -------------------------------------------------------------

    @property
    def address(self) -> str:
        """The node's BLE address as bleak shows it (``AA:BB:CC:DD:EE:FF``)."""
        return self._require_device().random_address.to_string(False)

    @property
    def connected(self) -> bool:
        return bool(self._device and self._device.connections)

    async def wait_for_subscriber(self) -> None:
        """Return once a central has enabled UPLINK notifications."""
        await self._subscribed.wait()

    @property
    def max_uplink_bytes(self) -> int:
        """The largest :meth:`notify_uplink` payload every subscribed central takes.

        ATT_MTU - 3 of the smallest negotiated MTU; the default MTU's 20 when nobody is
        subscribed. Size chunks (``gateway.protocol.ble_chunks``) with it.
        """
        device = self._require_device()
        mtus = [c.att_mtu for c in device.connections.values() if self._notifies(c)]
        return min(mtus, default=att.ATT_DEFAULT_MTU) - _NOTIFY_OVERHEAD

    async def notify_uplink(self, payload: bytes) -> bool:
        """Send ``payload`` as one UPLINK notification to every subscribed central.

        Returns False when nobody is subscribed (the node keeps the message for later).
        Raises ValueError when the payload does not fit one notification at the
        negotiated MTU: splitting it would break "one message per notification".
        """
        device = self._require_device()
        subscribers = [c for c in device.connections.values() if self._notifies(c)]
        for connection in subscribers:
            room = connection.att_mtu - _NOTIFY_OVERHEAD
            if len(payload) > room:
                raise ValueError(
                    f"{self.node_id}: {len(payload)}-byte uplink exceeds the {room} bytes "
                    f"one notification carries at MTU {connection.att_mtu}"
                )
        for connection in subscribers:
            await device.notify_subscriber(connection, self._uplink, payload)
        return bool(subscribers)

    def set_status(self, status: bytes) -> None:
        """What a STATUS read returns (unless a ``read_status`` callback was given)."""
        self._status = bytes(status)

    def set_temperature(self, celsius: float | None) -> None:
        """The ESS Temperature value; ``None`` reads as "unknown"."""
        self._temperature = encode_ess_temperature(celsius)

    async def set_advert_payload(self, payload: bytes) -> None:
        """Replace the manufacturer data in the adverts (beacon readings)."""
        self._check_advert_size(payload)
        self._advert_payload = bytes(payload)
        if self._advertising is not None:
            await self._advertising.set_advertising_data(self._advertising_data())

    async def disconnect(self) -> None:
        """Drop every central, as a node does when it reboots its radio."""
        await self._disconnect_all(self._require_device())

    # -- internals ----------------------------------------------------------------------

    def _require_device(self) -> Device:
        if self._device is None:
            raise RuntimeError(f"{self.node_id}: peripheral not started")
        return self._device

    def _notifies(self, connection: Connection) -> bool:
        cccd = self._require_device().gatt_server.read_cccd(connection, self._uplink)
        return bool(cccd[0] & 0x01)

    def _advertising_data(self) -> bytes:
        structures: list[core.DataType] = [
            data_types.Flags(
                AdvertisingData.Flags.LE_GENERAL_DISCOVERABLE_MODE
                | AdvertisingData.Flags.BR_EDR_NOT_SUPPORTED
            ),
            data_types.CompleteLocalName(self.node_id),
            data_types.CompleteListOf128BitServiceUUIDs([UUID(FIELDGATE_SERVICE_UUID)]),
        ]
        if self._advert_payload:
            structures.append(
                data_types.ManufacturerSpecificData(ADV_COMPANY_ID, self._advert_payload)
            )
        return bytes(AdvertisingData(structures))

    def _check_advert_size(self, payload: bytes) -> None:
        # Flags (3) + name (2 + n) + 128-bit UUID list (18) + manufacturer header (4).
        size = 3 + 2 + len(self.node_id.encode()) + 18 + (4 + len(payload) if payload else 0)
        if size > MAX_ADVERT_BYTES:
            raise ValueError(
                f"{self.node_id}: advert of {size} bytes exceeds {MAX_ADVERT_BYTES}; "
                f"shorten the payload to {len(payload) - (size - MAX_ADVERT_BYTES)} bytes"
            )

    def _status_value(self) -> bytes:
        return self._read_status() if self._read_status is not None else self._status

    async def _on_downlink_write(self, connection: Connection, value: bytes) -> None:
        handler = self.on_downlink
        if handler is None:
            _LOGGER.info("%s: downlink of %d bytes with no handler", self.node_id, len(value))
            return
        try:
            await handler(bytes(value))
        except Exception as exc:
            # A node that cannot take a downlink says so; the gateway sees a GATT error.
            self.downlink_errors += 1
            _LOGGER.exception("%s: downlink handler failed", self.node_id)
            raise att.ATT_Error(att.ErrorCode.UNLIKELY_ERROR) from exc

    def _on_transport_lost(self, _terminated: asyncio.Future[None]) -> None:
        device = self._device
        if device is None:
            return
        _LOGGER.warning("%s: HCI transport lost", self.node_id)
        self._lost = True
        # Bumble flushes on loss, then restarts advertising for the links it just
        # dropped; flushing once more cancels that restart, which would wait forever
        # for an answer from a dead controller.
        device.emit(Device.EVENT_FLUSH)

    def _on_connection(self, connection: Connection) -> None:
        _LOGGER.info("%s: central %s connected", self.node_id, connection.peer_address)
        connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)

    def _on_disconnection(self, reason: int) -> None:
        _LOGGER.info("%s: central disconnected (reason 0x%02X)", self.node_id, reason)
        device = self._device
        if device is None or not any(self._notifies(c) for c in device.connections.values()):
            self._subscribed.clear()

    def _on_uplink_subscription(
        self, _bearer: object, notify_enabled: bool, _indicate_enabled: bool
    ) -> None:
        if notify_enabled:
            self._subscribed.set()

    async def _disconnect_all(self, device: Device) -> None:
        for connection in list(device.connections.values()):
            try:
                async with asyncio.timeout(5.0):
                    await connection.disconnect()
            except (core.BaseBumbleError, TimeoutError) as exc:
                _LOGGER.info("%s: disconnect %s: %s", self.node_id, connection, exc)
