"""Opening an HCI controller by transport spec, and Bumble's virtual controller fixed up.

A *transport spec* names one HCI controller:

* ``local:<name>`` - a virtual controller registered in this process (see
  :class:`gateway.ble.radio.LocalRadio`);
* anything Bumble's ``open_transport`` accepts - ``tcp-client:127.0.0.1:9001`` for a
  controller exposed by a radio process, ``usb:0`` for a real dongle, ...
"""

from __future__ import annotations

import asyncio
import logging

from bumble import core, hci, ll
from bumble.controller import Controller
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, Transport

_LOGGER = logging.getLogger(__name__)

LOCAL_SCHEME = "local:"

_local_controllers: dict[str, VirtualController] = {}


def register_local_controller(spec: str, controller: VirtualController) -> None:
    """Make ``controller`` openable as ``spec`` (which starts with ``local:``)."""
    if not spec.startswith(LOCAL_SCHEME):
        raise ValueError(f"in-process controller specs start with {LOCAL_SCHEME!r}: {spec!r}")
    _local_controllers[spec] = controller


def unregister_local_controller(spec: str) -> None:
    _local_controllers.pop(spec, None)


class VirtualController(Controller):
    """Bumble's virtual controller, plus what a host needs when links break.

    Bumble's controller ignores LE Create Connection Cancel (so a timed-out connect
    waits forever and blocks every later one), never completes a Disconnect of an
    unknown handle, and keeps its links and adverts across an HCI Reset or a vanished
    host. A real controller does none of that, and the gateway's reconnect logic is
    only tested honestly if the virtual one behaves the same.

    Other limits of Bumble's virtual link, kept as they are: every advert is reported as
    connectable, scan response data is not sent (the advert's data is repeated), and
    adverts configured with the legacy HCI commands go out only if connectable (Bumble
    hosts use the extended commands, which carry every kind).
    """

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        # The spec orders Command Complete before the failed Connection Complete; the
        # Command Complete is queued when this handler returns, so queue ours after it.
        asyncio.get_running_loop().call_soon(self._report_connection_cancelled, pending)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def _report_connection_cancelled(
        self,
        pending: hci.HCI_LE_Create_Connection_Command
        | hci.HCI_LE_Extended_Create_Connection_Command,
    ) -> None:
        self.send_hci_packet(
            hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=hci.Role.CENTRAL,
                peer_address_type=pending.peer_address.address_type,
                peer_address=pending.peer_address,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            )
        )

    def on_hci_disconnect_command(self, command: hci.HCI_Disconnect_Command) -> None:
        handle = command.connection_handle
        known = (
            self.find_connection_by_handle(handle)
            or self.find_classic_sco_link_by_handle(handle)
            or self.find_iso_link_by_handle(handle)
        )
        if known is None:
            # Bumble says "pending" and never completes; the host would wait forever.
            self._send_hci_command_status(
                hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR, command.op_code
            )
            return None
        return super().on_hci_disconnect_command(command)

    def on_hci_reset_command(
        self, command: hci.HCI_Reset_Command
    ) -> hci.HCI_StatusReturnParameters:
        self.drop_radio_state()
        return super().on_hci_reset_command(command)

    def detach_host(self) -> None:
        """The host went away (process killed, transport closed): go quiet like a reset."""
        self.host = None
        self.drop_radio_state()

    def drop_radio_state(self) -> None:
        """Stop advertising and scanning and drop every LE link; peers see a timeout."""
        self.le_legacy_advertiser.stop()
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()
        self.advertising_sets.clear()
        self.le_scan_enable = False
        self.pending_le_connection = None
        for peer_address, connection in list(self.le_connections.items()):
            try:
                connection.send_ll_control_pdu(
                    ll.TerminateInd(hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR)
                )
            except core.InvalidArgumentError:
                _LOGGER.debug("%s: peer %s already gone from the link", self.name, peer_address)
            del self.le_connections[peer_address]


class _LocalTransport(Transport):
    """A host's view of an in-process virtual controller; closing it unplugs the host."""

    def __init__(self, controller: VirtualController) -> None:
        super().__init__(controller, AsyncPipeSink(controller))
        self._controller = controller

    async def close(self) -> None:
        self._controller.detach_host()


async def open_hci(spec: str) -> Transport:
    """Open the HCI transport named by ``spec`` (see the module docstring).

    Raises ``bumble.transport.common.TransportSpecError`` for an unknown spec and
    ``OSError`` when a TCP/USB transport cannot be opened.
    """
    if spec.startswith(LOCAL_SCHEME):
        controller = _local_controllers.get(spec)
        if controller is None:
            raise LookupError(f"no in-process controller {spec!r}; is its LocalRadio open?")
        if controller.host is not None:
            raise RuntimeError(f"controller {spec!r} already has a host attached")
        return _LocalTransport(controller)
    return await open_transport(spec)
