"""The downlink router sends Commands to simulated nodes over serial, BLE and MQTT, and the
nodes act on them; without a live link, sending fails and says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_tools.sim.ble_link import BleLink
from firmware_tools.sim.fleet import SimConfig, Simulator
from gateway.ble.radio import LocalRadio
from gateway.protocol.messages import Command, CommandKind
from tests.fixtures.gateway import gateway_config, wait_until
from tests.fixtures.ingest import wired_gateway
from tests.fixtures.servers import Mosquitto

pytestmark = pytest.mark.timeout(60)
SERIAL, BLE, MQTT = "pump-01", "pump-02", "pump-03"


def fleet(tmp_path: Path, radio_spec: str, broker: Mosquitto, site: str) -> Simulator:
    return Simulator(
        SimConfig(
            nodes=3,
            transports=("serial", "ble", "mqtt"),
            rate_hz=10.0,
            batch_size=5,
            broker_url=broker.url,
            site=site,
            pty_dir=tmp_path / "dev",
            ble_transport=radio_spec,
            resend_timeout_ms=500,
            status_interval_ms=60_000,
        )
    )


async def test_commands_reach_nodes_on_every_transport_and_nodes_obey(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    async with (
        LocalRadio(2) as radio,
        fleet(tmp_path, radio.specs[1], mosquitto, mqtt_prefix) as sim,
    ):
        await sim.wait_ready()
        cfg = gateway_config(
            tmp_path,
            site=mqtt_prefix,
            mqtt={"enabled": True, "url": mosquitto.url, "client_id": f"gw-{mqtt_prefix}"},
            serial={"ports": [{"path": sim.addresses()[SERIAL][1]}], "reopen_interval_s": 0.05},
            ble={"enabled": True, "transport": radio.specs[0], "nodes": [BLE]},
        )
        async with wired_gateway(cfg) as (_gw, downlinks):
            await wait_until(
                lambda: set(downlinks.nodes()) == {SERIAL, BLE, MQTT},
                what="a downlink to every node",
            )
            assert downlinks.nodes()[BLE] == f"source:ble:{BLE}"
            assert downlinks.nodes()[MQTT].startswith("source:mqtt:")
            assert downlinks.nodes()[SERIAL].startswith("source:serial:")
            for node in (SERIAL, BLE, MQTT):
                assert downlinks.send_command(
                    Command(node, 1, CommandKind.ACTUATE, (("output", "valve"), ("state", True)))
                )
                assert downlinks.send_command(
                    Command(node, 2, CommandKind.SET_THRESHOLD, (("threshold", 0.9),))
                )
                assert downlinks.send_command(Command(node, 2, CommandKind.REBOOT))  # a repeat id
            for node in (SERIAL, BLE, MQTT):
                logic = sim.nodes[node].logic
                await wait_until(
                    lambda logic=logic: logic.stats.duplicate_commands == 1,
                    what=f"{node} taking all three commands",
                )
                assert logic.outputs == {"valve": True}
                assert logic.threshold == 0.9
                assert logic.stats.commands == 2
                assert logic.stats.reboots == 0  # the repeated cmd_id was ignored
                assert sim.nodes[node].link.stats.bad_in == 0
            assert downlinks.sent == {SERIAL: 3, BLE: 3, MQTT: 3}

            # No link, no send: an unknown node, a pulled cable, a dropped BLE connection.
            assert not downlinks.send_command(Command("ghost", 1, CommandKind.REBOOT))
            sim.serial_link(SERIAL).unplug()
            await wait_until(lambda: SERIAL not in downlinks.nodes(), what="serial link withdrawn")
            assert not downlinks.send_command(Command(SERIAL, 3, CommandKind.REBOOT))
            link = sim.nodes[BLE].link
            assert isinstance(link, BleLink)
            assert link.peripheral is not None
            ble_link_before = downlinks.link_for(BLE)
            await link.peripheral.disconnect()
            await wait_until(
                lambda: downlinks.link_for(BLE) is not ble_link_before,
                what="BLE link withdrawn",
            )
            assert downlinks.failed == {"ghost": 1, SERIAL: 1}
            # The BLE node comes back on a new connection and is reachable again.
            await wait_until(lambda: BLE in downlinks.nodes(), what="BLE link re-registered")
            assert downlinks.send_command(Command(BLE, 4, CommandKind.REQUEST_INFO))
            before = sim.nodes[BLE].logic.stats.commands
            await wait_until(
                lambda: sim.nodes[BLE].logic.stats.commands == before + 1,
                what="REQUEST_INFO over the new connection",
            )
