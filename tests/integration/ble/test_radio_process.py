"""Gateway and nodes in different processes, meeting on the air of a radio process."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from bleak import BleakClient

from gateway.ble import BumbleClient
from gateway.protocol.ble_layout import DOWNLINK_CHAR_UUID, STATUS_CHAR_UUID, UPLINK_CHAR_UUID
from tests.integration.ble.conftest import REPO, WAIT_S, FindNode, RadioProcess, StartNode

pytestmark = pytest.mark.timeout(60)

# A node in a process of its own, so that the test can kill -9 it.
_NODE_SCRIPT = """
import asyncio, sys
from firmware_tools.sim.ble_peripheral import BlePeripheral

async def main():
    node = BlePeripheral(sys.argv[1], sys.argv[2], advertising_interval_ms=20)
    await node.start()
    print("node up", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def node_process(remote_radio: RadioProcess) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _NODE_SCRIPT, remote_radio.specs[1], "pump-09"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30.0)
        assert ready, "node process did not start within 30 s"
        assert proc.stdout.readline() == "node up\n"
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WAIT_S)
        assert proc.stdout is not None
        proc.stdout.close()


async def test_node_and_gateway_talk_through_a_radio_process(
    remote_radio: RadioProcess, start_node: StartNode, find_node: FindNode
) -> None:
    gateway_spec, node_spec, _ = remote_radio.specs
    assert gateway_spec.startswith("tcp-client:127.0.0.1:")
    downlinks: asyncio.Queue[bytes] = asyncio.Queue()
    uplinks: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_downlink(data: bytes) -> None:
        downlinks.put_nowait(data)

    node = await start_node(node_spec, "pump-07", on_downlink=on_downlink)
    node.set_status(b"status")

    device, _ = await find_node(gateway_spec, lambda _d, a: a.local_name == "pump-07")
    async with BleakClient(device, backend=BumbleClient, timeout=WAIT_S) as client:
        await client.start_notify(UPLINK_CHAR_UUID, lambda _c, d: uplinks.put_nowait(bytes(d)))
        await node.wait_for_subscriber()
        for i in range(20):
            assert await node.notify_uplink(i.to_bytes(2, "big") * 100)
        await client.write_gatt_char(DOWNLINK_CHAR_UUID, b"ack-19", response=True)
        assert await client.read_gatt_char(STATUS_CHAR_UUID) == b"status"
        async with asyncio.timeout(WAIT_S):
            got = [await uplinks.get() for _ in range(20)]

    assert got == [i.to_bytes(2, "big") * 100 for i in range(20)]
    assert downlinks.get_nowait() == b"ack-19"


async def test_killed_node_process_drops_the_gateway_link_and_can_come_back(
    remote_radio: RadioProcess,
    node_process: subprocess.Popen[str],
    start_node: StartNode,
    find_node: FindNode,
) -> None:
    gateway_spec, node_spec, _ = remote_radio.specs
    gone = asyncio.Event()
    device, _ = await find_node(gateway_spec, lambda _d, a: a.local_name == "pump-09")
    client = BleakClient(
        device, disconnected_callback=lambda _c: gone.set(), backend=BumbleClient, timeout=WAIT_S
    )
    await client.connect()

    os.kill(node_process.pid, signal.SIGKILL)
    async with asyncio.timeout(WAIT_S):
        await gone.wait()
    assert not client.is_connected

    # The radio frees the controller for the node's next life (same port, clean state).
    node = await start_node(node_spec, "pump-09")
    device, _ = await find_node(
        gateway_spec, lambda d, a: a.local_name == "pump-09" and d.address == node.address
    )
    async with BleakClient(device, backend=BumbleClient, timeout=WAIT_S) as again:
        await again.start_notify(UPLINK_CHAR_UUID, lambda _c, _d: None)
        await node.wait_for_subscriber()
        assert await node.notify_uplink(b"reborn")


async def test_gateway_sees_disconnection_when_the_radio_dies(
    remote_radio: RadioProcess, start_node: StartNode, find_node: FindNode
) -> None:
    gateway_spec, node_spec, _ = remote_radio.specs
    await start_node(node_spec, "pump-07")
    gone = asyncio.Event()
    device, _ = await find_node(gateway_spec, lambda _d, a: a.local_name == "pump-07")
    client = BleakClient(
        device, disconnected_callback=lambda _c: gone.set(), backend=BumbleClient, timeout=WAIT_S
    )
    await client.connect()

    started = time.monotonic()
    remote_radio.kill()
    async with asyncio.timeout(WAIT_S):
        await gone.wait()

    assert not client.is_connected
    assert time.monotonic() - started < 1.0
