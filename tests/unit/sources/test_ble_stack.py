"""ble.transport picks the Bluetooth stack; the source above bleak's API is the same for both."""

from __future__ import annotations

import pytest

from gateway.ble import BumbleClient, BumbleScanner
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.ingest import IngestQueue
from gateway.metrics import Metrics
from gateway.sources.ble import BleSource


def source(transport: str) -> BleSource:
    cfg = load_config(ble={"enabled": True, "transport": transport})
    return BleSource(cfg.ble, IngestQueue(10, "block"), Metrics())


def test_the_default_shares_the_systems_adapter_through_bluez() -> None:
    cfg = load_config()
    assert cfg.ble.transport == "bluez:hci0"
    assert cfg.ble.bluez_adapter == "hci0"
    ble = source("bluez:hci1")
    # bleak's own Linux backend (no backend= argument), on the named adapter.
    assert ble.stack_kwargs("scanner") == {"adapter": "hci1"}
    assert ble.stack_kwargs("client") == {"adapter": "hci1"}


def test_a_bumble_transport_uses_the_bumble_backend() -> None:
    ble = source("tcp-client:127.0.0.1:9001")
    assert ble.stack_kwargs("scanner") == {
        "backend": BumbleScanner,
        "bumble_transport": "tcp-client:127.0.0.1:9001",
    }
    assert ble.stack_kwargs("client") == {"backend": BumbleClient}


@pytest.mark.parametrize("bad", ["bluez", "bluez:", "hci0", ":0"])
def test_an_unknown_transport_is_refused_naming_the_key(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(ble={"transport": bad})
    assert err.value.key == "ble.transport"
