"""A bleak backend on the Bumble host stack: the gateway speaks bleak, Bumble drives HCI.

The gateway only uses bleak's public API::

    scanner = BleakScanner(on_advert, backend=BumbleScanner, bumble_transport=spec)
    client = BleakClient(device, disconnected_callback=on_gone, backend=BumbleClient)

``spec`` names an HCI controller (see :mod:`gateway.ble.radio`): ``local:...`` for an
in-process virtual controller, ``tcp-client:HOST:PORT`` for one served by a radio
process, ``usb:0`` for a real dongle. Scanners and clients on the same spec share one
:class:`BumbleAdapter` (one Bumble ``Device``, i.e. one host on that controller), kept
in a module registry: :func:`get_adapter`, :func:`close_adapters`. A ``BLEDevice`` found
by a scanner remembers its adapter, so ``BleakClient(device, backend=BumbleClient)``
needs no spec; a client built from an address string uses ``bumble_transport`` or the
default set with :func:`set_default_transport`.

Errors follow bleak: GATT errors raise ``BleakGATTProtocolError``, a connect that does
not complete in ``timeout`` raises ``TimeoutError``, other failures ``BleakError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES, CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError
from bleak.uuids import normalize_uuid_str
from bumble import att, core, hci
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt_client import CharacteristicProxy, Client
from bumble.host import Host
from bumble.transport.common import Transport

from gateway.aio_compat import being_cancelled
from gateway.ble.transport import open_hci

_LOGGER = logging.getLogger(__name__)

# What BlueZ asks for too; the peripheral answers with what it supports.
MTU_REQUEST = 517
_DISCONNECT_TIMEOUT_S = 5.0
_POWER_ON_TIMEOUT_S = 10.0
_MAX_REMEMBERED_ADDRESSES = 1024

_ADV = AdvertisingData.Type
_SERVICE_UUID_TYPES = (
    _ADV.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
    _ADV.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
    _ADV.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS,
    _ADV.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS,
    _ADV.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
    _ADV.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
)
_SERVICE_DATA_TYPES = (
    _ADV.SERVICE_DATA_16_BIT_UUID,
    _ADV.SERVICE_DATA_32_BIT_UUID,
    _ADV.SERVICE_DATA_128_BIT_UUID,
)

_default_transport: str | None = None
_adapters: dict[str, BumbleAdapter] = {}


def set_default_transport(spec: str | None) -> None:
    """The controller used by scanners and clients that are given no ``bumble_transport``."""
    global _default_transport  # noqa: PLW0603 - one process-wide default, set at wiring time
    _default_transport = spec


async def get_adapter(spec: str | None = None) -> BumbleAdapter:
    """The shared, powered-on adapter for ``spec`` (or the default), opening it if needed."""
    spec = spec or _default_transport
    if spec is None:
        raise BleakError("no Bumble transport: pass bumble_transport=... or set a default")
    adapter = _adapters.get(spec)
    if adapter is None or not adapter.reusable:
        adapter = _adapters[spec] = BumbleAdapter(spec)
    await adapter.open()
    return adapter


async def close_adapters() -> None:
    """Close every adapter of the registry (disconnecting its links)."""
    adapters = list(_adapters.values())
    _adapters.clear()
    for adapter in adapters:
        await adapter.close()


def _uuid_str(uuid: core.UUID) -> str:
    return normalize_uuid_str(uuid.to_hex_str("-"))


@dataclass(frozen=True, slots=True)
class BumbleDeviceDetails:
    """``BLEDevice.details``: the typed address and the adapter that saw the device."""

    address: hci.Address
    transport: str


class BumbleAdapter:
    """One Bumble host (``Device``) on one controller, shared by scanners and clients."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.device: Device | None = None
        self._transport: Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._open_lock = asyncio.Lock()
        self._scan_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self._scan_listeners: set[Callable[[Advertisement], None]] = set()
        self._lost = False
        self._closed = False
        # Address strings as bleak shows them -> typed addresses seen in adverts.
        self.addresses: dict[str, hci.Address] = {}

    @property
    def reusable(self) -> bool:
        """False once closed, after its transport died, or when its event loop is gone."""
        return not (self._closed or self._lost) and self._loop is asyncio.get_running_loop()

    async def open(self) -> None:
        async with self._open_lock:
            if self.device is not None:
                return
            try:
                transport = await open_hci(self.spec)
            except (OSError, core.BaseBumbleError) as exc:
                raise BleakError(f"cannot open Bluetooth controller {self.spec!r}: {exc}") from exc
            device = Device(name="fieldgate", host=Host(transport.source, transport.sink))
            device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
            try:
                async with asyncio.timeout(_POWER_ON_TIMEOUT_S):
                    await device.power_on()
            except (TimeoutError, core.BaseBumbleError) as exc:
                await transport.close()
                raise BleakError(
                    f"Bluetooth controller {self.spec!r} does not answer HCI Reset "
                    f"({exc!r}); is another host attached, or the dongle wedged?"
                ) from exc
            except BaseException:
                await transport.close()
                raise
            transport.source.terminated.add_done_callback(self._on_transport_lost)
            self._transport, self.device = transport, device
            _LOGGER.info("ble adapter %s up as %s", self.spec, device.random_address)

    def _on_transport_lost(self, _future: asyncio.Future[None]) -> None:
        # Bumble already reports every link as disconnected (Device.on_flush).
        if not self._closed:
            _LOGGER.warning("ble adapter %s: HCI transport lost", self.spec)
        self._lost = True
        if self.device is not None:
            # Cancels whatever Bumble started while flushing (it would wait forever
            # for a dead controller).
            self.device.emit(Device.EVENT_FLUSH)

    def _require_device(self) -> Device:
        if self.device is None or not self.reusable:
            raise BleakError(f"Bluetooth adapter {self.spec!r} is not available")
        return self.device

    async def close(self) -> None:
        self._closed = True
        device, transport = self.device, self._transport
        self.device = self._transport = None
        if device is not None and not self._lost:
            for connection in list(device.connections.values()):
                with contextlib.suppress(core.BaseBumbleError, TimeoutError):
                    async with asyncio.timeout(_DISCONNECT_TIMEOUT_S):
                        await connection.disconnect()
            await device.power_off()
        if transport is not None:
            await transport.close()

    # -- scanning -----------------------------------------------------------------------

    async def add_scan_listener(
        self, listener: Callable[[Advertisement], None], *, passive: bool = False
    ) -> None:
        """Deliver every advertisement to ``listener``; scanning runs while any listens."""
        async with self._scan_lock:
            device = self._require_device()
            self._scan_listeners.add(listener)
            if not device.is_scanning:
                # Duplicates are the point: bleak reports every advert (beacon updates).
                await device.start_scanning(active=not passive, filter_duplicates=False)

    async def remove_scan_listener(self, listener: Callable[[Advertisement], None]) -> None:
        async with self._scan_lock:
            self._scan_listeners.discard(listener)
            device = self.device
            idle = not self._scan_listeners and device is not None and device.is_scanning
            if idle and device is not None and self.reusable:
                await device.stop_scanning()

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        key = advertisement.address.to_string(False)
        if key not in self.addresses and len(self.addresses) >= _MAX_REMEMBERED_ADDRESSES:
            # Phones rotate private addresses all day; forget the oldest sighting.
            del self.addresses[next(iter(self.addresses))]
        self.addresses[key] = advertisement.address
        for listener in list(self._scan_listeners):
            listener(advertisement)

    # -- connections --------------------------------------------------------------------

    async def connect(self, address: hci.Address, timeout_s: float) -> Connection:
        """Connect as central; one connection attempt at a time per controller."""
        async with self._connect_lock:
            device = self._require_device()
            try:
                return await device.connect_le(address, timeout=timeout_s)
            except asyncio.CancelledError:
                # Bumble only cancels on its own timeout; tell the controller too, or it
                # would connect later behind our back and refuse the next attempt.
                with contextlib.suppress(core.BaseBumbleError):
                    await device.send_sync_command(hci.HCI_LE_Create_Connection_Cancel_Command())
                raise
            except core.TimeoutError as exc:
                raise TimeoutError(f"no connection to {address} within {timeout_s} s") from exc
            except core.ConnectionError as exc:
                raise BleakError(f"connection to {address} failed: {exc}") from exc


def _advertisement_data(advertisement: Advertisement) -> AdvertisementData:
    data = advertisement.data
    name = data.get(_ADV.COMPLETE_LOCAL_NAME) or data.get(_ADV.SHORTENED_LOCAL_NAME)
    manufacturer_data = {
        company: bytes(payload)
        for company, payload in data.get_all(_ADV.MANUFACTURER_SPECIFIC_DATA)
    }
    service_data = {
        _uuid_str(uuid): bytes(payload)
        for ad_type in _SERVICE_DATA_TYPES
        for uuid, payload in cast(list[tuple[core.UUID, bytes]], data.get_all(ad_type))
    }
    # dict.fromkeys: ordered de-duplication (a scan response may repeat the advert).
    service_uuids = list(
        dict.fromkeys(
            _uuid_str(uuid)
            for ad_type in _SERVICE_UUID_TYPES
            for uuids in cast(list[list[core.UUID]], data.get_all(ad_type))
            for uuid in uuids
        )
    )
    tx_power = data.get(_ADV.TX_POWER_LEVEL)
    if tx_power is None and advertisement.tx_power != Advertisement.TX_POWER_NOT_AVAILABLE:
        tx_power = advertisement.tx_power
    return AdvertisementData(
        local_name=name,
        manufacturer_data=manufacturer_data,
        service_data=service_data,
        service_uuids=service_uuids,
        tx_power=tx_power,
        rssi=advertisement.rssi,
        platform_data=(advertisement,),
    )


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend; extra keyword: ``bumble_transport`` (a transport spec)."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        *,
        bumble_transport: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._passive = scanning_mode == "passive"
        self._spec = bumble_transport
        self._adapter: BumbleAdapter | None = None

    async def start(self) -> None:
        self.seen_devices = {}
        # Set before listening: reports may arrive while scanning is being enabled.
        self._adapter = adapter = await get_adapter(self._spec)
        try:
            await adapter.add_scan_listener(self._on_advertisement, passive=self._passive)
        except BaseException:
            self._adapter = None
            raise

    async def stop(self) -> None:
        adapter, self._adapter = self._adapter, None
        if adapter is not None:
            await adapter.remove_scan_listener(self._on_advertisement)

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        assert self._adapter is not None
        data = _advertisement_data(advertisement)
        if not self.is_allowed_uuid(data.service_uuids):
            return
        key = str(advertisement.address)  # keeps the "/P" of public addresses
        previous = self.seen_devices.get(key)
        name = data.local_name or (previous[0].name if previous else None)
        device = self.create_or_update_device(
            key,
            advertisement.address.to_string(False),
            name,
            BumbleDeviceDetails(advertisement.address, self._adapter.spec),
            data,
        )
        self.call_detection_callbacks(device, data)


@contextlib.contextmanager
def _gatt_errors(address: str) -> Iterator[None]:
    """Map Bumble's GATT failures to bleak's, in one place."""
    try:
        yield
    except att.ATT_Error as exc:
        raise BleakGATTProtocolError(exc.error_code) from exc
    except core.TimeoutError as exc:
        raise TimeoutError(f"{address}: no GATT response") from exc
    except asyncio.CancelledError as exc:
        if being_cancelled():
            raise
        # Bumble cancels the pending request when the link drops; to the caller that
        # is a failed operation, not a cancellation of its task.
        raise BleakError(f"{address}: disconnected during a GATT operation") from exc
    except core.BaseBumbleError as exc:
        raise BleakError(f"{address}: {exc}") from exc


def _properties(flags: int) -> list[CharacteristicPropertyName]:
    return [name for bit, name in CHARACTERISTIC_PROPERTIES.items() if flags & bit]


class BumbleClient(BaseBleakClient):
    """bleak client backend; extra keyword: ``bumble_transport`` for address strings."""

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        services: set[str] | None = None,
        *,
        disconnected_callback: Callable[[], None] | None,
        timeout: float,
        bumble_transport: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout
        )
        self._details: BumbleDeviceDetails | None = None
        self._name = self.address
        if isinstance(address_or_ble_device, BLEDevice):
            if isinstance(address_or_ble_device.details, BumbleDeviceDetails):
                self._details = address_or_ble_device.details
            self._name = address_or_ble_device.name or self.address
        self._spec = bumble_transport or (self._details.transport if self._details else None)
        self._requested = [core.UUID(uuid) for uuid in services] if services else []
        self._connection: Connection | None = None
        self._gatt: Client | None = None
        self._notify_subscribers: dict[int, Callable[[bytes], None]] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection else att.ATT_DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    def _target(self, adapter: BumbleAdapter) -> hci.Address:
        if self._details is not None:
            return self._details.address
        known = adapter.addresses.get(self.address.upper())
        # Most nodes use random static addresses; "/P" marks a public one.
        return known or hci.Address(self.address)

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if self.is_connected:
            raise BleakError("Client is already connected")
        if pair:
            _LOGGER.warning("%s: pairing is not supported by the Bumble backend", self.address)
        adapter = await get_adapter(self._spec)
        connection = await adapter.connect(self._target(adapter), self._timeout)
        self._connection = connection
        connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)
        self._gatt = connection.gatt_client
        try:
            async with asyncio.timeout(self._timeout):
                with _gatt_errors(self.address):
                    await self._exchange_mtu(Peer(connection))
                    self.services = await self._discover(connection.gatt_client)
        except BaseException:
            await self.disconnect()
            raise

    async def _exchange_mtu(self, peer: Peer) -> None:
        try:
            await peer.request_mtu(MTU_REQUEST)
        except att.ATT_Error:
            _LOGGER.info("%s: MTU exchange refused, staying at %d", self.address, self.mtu_size)

    async def _discover(self, gatt: Client) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        for service in await gatt.discover_services(self._requested):
            bleak_service = BleakGATTService(service, service.handle, _uuid_str(service.uuid))
            collection.add_service(bleak_service)
            for characteristic in await gatt.discover_characteristics((), service):
                bleak_characteristic = BleakGATTCharacteristic(
                    characteristic,
                    characteristic.handle,
                    _uuid_str(characteristic.uuid),
                    _properties(characteristic.properties),
                    lambda: self.mtu_size - 3,
                    bleak_service,
                )
                collection.add_characteristic(bleak_characteristic)
                for descriptor in await gatt.discover_descriptors(characteristic):
                    collection.add_descriptor(
                        BleakGATTDescriptor(
                            descriptor,
                            descriptor.handle,
                            _uuid_str(descriptor.type),
                            bleak_characteristic,
                        )
                    )
        return collection

    def _on_disconnection(self, reason: int) -> None:
        _LOGGER.info("%s: disconnected (reason 0x%02X)", self.address, reason)
        self._connection = self._gatt = None
        self._notify_subscribers.clear()
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            async with asyncio.timeout(_DISCONNECT_TIMEOUT_S):
                await connection.disconnect()
        except (core.BaseBumbleError, TimeoutError) as exc:
            # The link is gone or the controller is: either way we are not connected.
            _LOGGER.info("%s: disconnect: %s", self.address, exc)
            if self._connection is connection:
                self._on_disconnection(hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("pairing is not supported by the Bumble backend")

    async def unpair(self) -> None:
        raise BleakError("pairing is not supported by the Bumble backend")

    def _client(self) -> Client:
        if self._gatt is None:
            raise BleakError(f"{self.address}: not connected")
        return self._gatt

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return await self._read(characteristic.handle, use_cached)

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return await self._read(descriptor.handle, use_cached)

    async def _read(self, handle: int, use_cached: bool) -> bytearray:
        gatt = self._client()
        if use_cached and handle in gatt.cached_values:
            return bytearray(gatt.cached_values[handle][1])
        with _gatt_errors(self.address):
            return bytearray(await gatt.read_value(handle))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        await self._write(characteristic.handle, bytes(data), response)

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        await self._write(descriptor.handle, bytes(data), True)

    async def _write(self, handle: int, data: bytes, response: bool) -> None:
        with _gatt_errors(self.address):
            await self._client().write_value(handle, data, with_response=response)

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        proxy: CharacteristicProxy[bytes] = characteristic.obj

        def on_value(value: bytes) -> None:
            try:
                callback(bytearray(value))
            except Exception:
                # Bumble would log it deep in its HCI path; say where it came from.
                _LOGGER.exception("%s: notification callback failed", self.address)

        with _gatt_errors(self.address):
            await self._client().subscribe(proxy, on_value)
        self._notify_subscribers[characteristic.handle] = on_value

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        subscriber = self._notify_subscribers.pop(characteristic.handle, None)
        with _gatt_errors(self.address):
            await self._client().unsubscribe(characteristic.obj, subscriber)
