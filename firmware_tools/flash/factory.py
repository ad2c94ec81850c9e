"""Inventory entry → :class:`~firmware_tools.flash.api.NodeFlasher` for its transport.

The transports' modules are imported only when a node needs them, so ``flash-model flash``
over serial never imports bleak or Bumble. :class:`FlasherFactory` owns what it creates: leave
its ``async with`` and every flasher is closed.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.flash.api import NodeFlasher
from firmware_tools.flash.inventory import NodeEntry, Transport
from gateway.errors import ConfigError

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """What the transports need beyond a node's own entry."""

    baud: int = 115_200
    ble_hci: str | None = None  # Bumble HCI transport spec for smp-ble ("usb:0", "tcp-client:...")
    timeout_s: float = 5.0  # how long a node may stay silent before it counts as unreachable
    fleet_key: Ed25519PrivateKey | None = None  # issue 15: signs MCUboot images (image path)


class FlasherFactory:
    """Creates flashers for inventory entries and closes them all on exit."""

    def __init__(self, options: LinkOptions | None = None) -> None:
        self.options = options or LinkOptions()
        self._created: list[NodeFlasher] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        created, self._created = self._created, []
        uses_ble = any(f.transport == Transport.SMP_BLE for f in created)
        async with contextlib.AsyncExitStack() as stack:
            if uses_ble:
                # SmpBleFlasher shares one Bumble adapter per controller process-wide; it
                # must close on this event loop, after the flashers' connections.
                from gateway.ble import close_adapters

                stack.push_async_callback(close_adapters)
            # Each close runs even if an earlier one raises; errors surface after all ran.
            for flasher in created:
                stack.push_async_callback(flasher.aclose)

    def create(self, entry: NodeEntry) -> NodeFlasher:
        flasher = self._build(entry)
        self._created.append(flasher)
        return flasher

    def _build(self, entry: NodeEntry) -> NodeFlasher:
        opts = self.options
        match entry.transport:
            case Transport.SERIAL:
                from firmware_tools.flash.serial_flasher import SerialFlasher

                return SerialFlasher(
                    entry.node_id, entry.address, baud=opts.baud, timeout_s=opts.timeout_s
                )
            case Transport.MQTT:
                from firmware_tools.flash.mqtt_flasher import MqttFlasher

                assert entry.site is not None  # inventory and spec parsing guarantee it
                return MqttFlasher(
                    entry.node_id, entry.address, site=entry.site, timeout_s=opts.timeout_s
                )
            case Transport.SMP_SERIAL:
                # issue 15: capabilities first; our profile is one of the paths it picks.
                from firmware_tools.flash.mcumgr.flasher import McuMgrFlasher

                return McuMgrFlasher(
                    entry.node_id,
                    entry.address,
                    baud=opts.baud,
                    timeout_s=opts.timeout_s,
                    options=entry.mcumgr,
                    target=entry.target,
                    fleet_key=opts.fleet_key,
                )
            case Transport.SMP_BLE:
                if opts.ble_hci is None:
                    raise ConfigError(
                        f"{entry.origin}: ble_hci",
                        "smp-ble nodes need a Bluetooth controller: pass --ble-hci (e.g. usb:0) "
                        "or set ble_hci in the inventory's [defaults]",
                    )
                from firmware_tools.flash.smp_flasher import SmpBleFlasher

                return SmpBleFlasher(
                    entry.node_id, entry.address, hci=opts.ble_hci, timeout_s=opts.timeout_s
                )
