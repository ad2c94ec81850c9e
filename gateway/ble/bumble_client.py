"""The bleak client backend on Bumble: connect, discover, read, write and notify over GATT.

Scanners, adapters and the adapter registry are in :mod:`gateway.ble.bumble_backend`; a
client reuses the adapter of the scanner that found its device. Bumble's GATT failures map
to bleak's errors in one place (:func:`_gatt_errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES, CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError
from bumble import att, core, hci
from bumble.device import Connection, Peer
from bumble.gatt_client import CharacteristicProxy, Client

from gateway.aio_compat import being_cancelled
from gateway.ble.bumble_backend import (
    DISCONNECT_TIMEOUT_S,
    BumbleAdapter,
    BumbleDeviceDetails,
    get_adapter,
    uuid_str,
)

_LOGGER = logging.getLogger(__name__)

MTU_REQUEST = 517


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
            bleak_service = BleakGATTService(service, service.handle, uuid_str(service.uuid))
            collection.add_service(bleak_service)
            for characteristic in await gatt.discover_characteristics((), service):
                bleak_characteristic = BleakGATTCharacteristic(
                    characteristic,
                    characteristic.handle,
                    uuid_str(characteristic.uuid),
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
                            uuid_str(descriptor.type),
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
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
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
