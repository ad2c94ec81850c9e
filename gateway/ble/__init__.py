"""BLE for fieldgate: a Bumble-backed bleak backend and virtual radios for tests.

The gateway uses bleak's public API with :class:`BumbleScanner` / :class:`BumbleClient`
as backend; :mod:`gateway.ble.radio` provides the controllers they attach to.
"""

from gateway.ble.bumble_backend import (
    BumbleAdapter,
    BumbleClient,
    BumbleDeviceDetails,
    BumbleScanner,
    close_adapters,
    get_adapter,
    set_default_transport,
)
from gateway.ble.radio import LocalRadio, open_hci

__all__ = [
    "BumbleAdapter",
    "BumbleClient",
    "BumbleDeviceDetails",
    "BumbleScanner",
    "LocalRadio",
    "close_adapters",
    "get_adapter",
    "open_hci",
    "set_default_transport",
]
