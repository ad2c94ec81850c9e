"""BLE for fieldgate: a Bumble-backed bleak backend and the controllers it drives.

The gateway uses bleak's public API with :class:`BumbleScanner` / :class:`BumbleClient`
as backend (:mod:`gateway.ble.bumble_backend`, :mod:`gateway.ble.bumble_client`); :mod:`gateway.ble.transport` opens
controllers by spec; :mod:`gateway.ble.radio` provides virtual ones for tests (it is
not imported here so that ``python -m gateway.ble.radio`` runs it fresh).
"""

from gateway.ble.bumble_backend import (
    BumbleAdapter,
    BumbleDeviceDetails,
    BumbleScanner,
    close_adapters,
    get_adapter,
    set_default_transport,
)
from gateway.ble.bumble_client import BumbleClient
from gateway.ble.transport import open_hci

__all__ = [
    "BumbleAdapter",
    "BumbleClient",
    "BumbleDeviceDetails",
    "BumbleScanner",
    "close_adapters",
    "get_adapter",
    "open_hci",
    "set_default_transport",
]
