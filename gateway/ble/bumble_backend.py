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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import BleakError
from bleak.uuids import normalize_uuid_str
from bumble import core, hci
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device
from bumble.host import Host
from bumble.transport.common import Transport

from gateway.ble.transport import open_hci

_LOGGER = logging.getLogger(__name__)

# What BlueZ asks for too; the peripheral answers with what it supports.
DISCONNECT_TIMEOUT_S = 5.0
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


def uuid_str(uuid: core.UUID) -> str:
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
                    async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
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
        uuid_str(uuid): bytes(payload)
        for ad_type in _SERVICE_DATA_TYPES
        for uuid, payload in cast(list[tuple[core.UUID, bytes]], data.get_all(ad_type))
    }
    # dict.fromkeys: ordered de-duplication (a scan response may repeat the advert).
    service_uuids = list(
        dict.fromkeys(
            uuid_str(uuid)
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
