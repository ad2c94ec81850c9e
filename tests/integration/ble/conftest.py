"""BLE fixtures: Bumble virtual controllers on one LocalLink, simulated nodes, a radio process."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from firmware_tools.sim.ble_peripheral import BlePeripheral
from gateway.ble import BumbleScanner, close_adapters
from gateway.ble.radio import READY_PREFIX, LocalRadio

REPO = Path(__file__).resolve().parents[3]
# Virtual adverts are instant; a short interval keeps connects (which wait for the
# next advert of the target, as on air) in the tens of milliseconds.
FAST_ADVERT_MS = 20.0
WAIT_S = 5.0

Sighting = tuple[BLEDevice, AdvertisementData]
FindNode = Callable[..., Awaitable[Sighting]]
MakeNode = Callable[..., Awaitable[BlePeripheral]]
StartNode = Callable[..., Awaitable[BlePeripheral]]


@pytest.fixture
async def radio() -> AsyncIterator[LocalRadio]:
    """Four virtual controllers on one link: specs[0] is the gateway's by convention."""
    async with LocalRadio(4) as local_radio:
        yield local_radio
        # Adapters talk to these controllers: close them while the controllers exist.
        await close_adapters()


@pytest.fixture
def gateway_spec(radio: LocalRadio) -> str:
    return radio.specs[0]


@pytest.fixture
async def start_node() -> AsyncIterator[StartNode]:
    """Start a simulated node on a given controller; stopped at teardown."""
    nodes: list[BlePeripheral] = []

    async def start(transport: str, node_id: str, **kwargs: Any) -> BlePeripheral:
        kwargs.setdefault("advertising_interval_ms", FAST_ADVERT_MS)
        node = BlePeripheral(transport, node_id, **kwargs)
        nodes.append(node)
        await node.start()
        return node

    yield start
    for node in nodes:
        await node.stop()


@pytest.fixture
def make_node(radio: LocalRadio, start_node: StartNode) -> MakeNode:
    """Start a simulated node on the next free controller of ``radio``."""
    used = iter(radio.specs[1:])

    async def make(node_id: str, **kwargs: Any) -> BlePeripheral:
        return await start_node(next(used), node_id, **kwargs)

    return make


@pytest.fixture
def find_node() -> FindNode:
    """Scan through bleak until an advert satisfies ``match``; returns the sighting."""

    async def find(
        transport: str,
        match: Callable[[BLEDevice, AdvertisementData], bool],
        *,
        service_uuids: list[str] | None = None,
    ) -> Sighting:
        found: asyncio.Future[Sighting] = asyncio.get_running_loop().create_future()

        def on_advert(device: BLEDevice, advert: AdvertisementData) -> None:
            if not found.done() and match(device, advert):
                found.set_result((device, advert))

        scanner = BleakScanner(
            on_advert,
            service_uuids=service_uuids,
            backend=BumbleScanner,
            bumble_transport=transport,
        )
        async with scanner, asyncio.timeout(WAIT_S):
            return await found

    return find


@dataclass
class RadioProcess:
    """``python -m gateway.ble.radio`` in a child process; ``specs[i]`` attaches to controller i."""

    proc: subprocess.Popen[str]
    specs: list[str]

    def kill(self) -> None:
        """SIGKILL by PID: the radio vanishes mid-flight, as a crashed process does."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=WAIT_S)


def _read_ready_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        readable, _, _ = select.select([proc.stdout], [], [], 0.1)
        if readable:
            line = proc.stdout.readline()
            if line.startswith(READY_PREFIX):
                return line
            if not line:
                break
    raise RuntimeError(f"radio process not ready (exit code {proc.poll()})")


@pytest.fixture
def radio_process() -> Iterator[RadioProcess]:
    """Three virtual controllers served over HCI/TCP on free loopback ports."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.ble.radio", "--controllers", "3", "--base-port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = _read_ready_line(proc, timeout_s=30.0)
        yield RadioProcess(proc, line.removeprefix(READY_PREFIX).split())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=WAIT_S)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture
async def remote_radio(radio_process: RadioProcess) -> AsyncIterator[RadioProcess]:
    """The radio process, with this process's adapters closed before it stops."""
    yield radio_process
    await close_adapters()
