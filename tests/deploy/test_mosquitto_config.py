"""The shipped broker config (deploy/mosquitto/) as an attacker on the site LAN meets it.

The real mosquitto runs deploy/mosquitto/fieldgate.conf and its ACL, with only the paths
and ports changed for the test; certificates are made here. A node may publish only its own
uplinks and read only its own downlinks; anonymous clients and plain TCP on the TLS port
are refused; the gateway, logged in as itself, ingests what the broker lets through.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from gateway.config import load_config
from gateway.doctor import check_broker
from tests.fixtures.certs import make_server_certs
from tests.fixtures.gateway import gateway_config, journal_keys, running_gateway, wait_until
from tests.fixtures.ports import free_port, wait_for_port
from tests.fixtures.servers import _find, _stop

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
USERS = {"fieldgate-gateway": "gw-secret", "pump-01": "p1-secret", "pump-02": "p2-secret"}


@dataclass
class SiteBroker:
    plain_port: int
    tls_port: int
    ca: Path

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture
def site_broker(tmp_path: Path) -> Iterator[SiteBroker]:
    etc = tmp_path / "etc"
    etc.mkdir()
    make_server_certs(etc)
    (etc / "acl").write_text((SHIPPED / "acl").read_text())
    for user, password in USERS.items():
        subprocess.run(
            [str(SHIPPED / "add-user.sh"), user],
            env={**os.environ, "PASSWD_FILE": str(etc / "passwd"), "PASSWORD": password},
            check=True,
            capture_output=True,
        )
    plain, tls = free_port(), free_port()
    conf = (
        (SHIPPED / "fieldgate.conf")
        .read_text()
        .replace("/etc/mosquitto/fieldgate/", f"{etc}/")
        .replace("/var/lib/mosquitto/", f"{tmp_path}/")
        .replace("listener 1883 127.0.0.1", f"listener {plain} 127.0.0.1")
        .replace("listener 8883", f"listener {tls} 127.0.0.1")
    )
    # As root, mosquitto drops to its own user, which cannot read pytest's 0700 tmp dirs.
    conf += "user root\n" if os.geteuid() == 0 else ""
    (tmp_path / "mosquitto.conf").write_text(conf)
    log = (tmp_path / "mosquitto.log").open("ab")
    proc = subprocess.Popen(
        [_find("mosquitto", "/usr/sbin/mosquitto"), "-c", str(tmp_path / "mosquitto.conf")],
        stdout=log,
        stderr=log,
    )
    log.close()
    try:
        wait_for_port("127.0.0.1", plain)
        wait_for_port("127.0.0.1", tls)
        yield SiteBroker(plain, tls, etc / "ca.crt")
    finally:
        _stop(proc)


def client(broker: SiteBroker, user: str | None, *, tls: bool = True) -> aiomqtt.Client:
    return aiomqtt.Client(
        "localhost" if tls else "127.0.0.1",
        broker.tls_port if tls else broker.plain_port,
        username=user,
        password=USERS.get(user or ""),
        identifier=f"test-{user}",
        tls_context=broker.tls() if tls else None,
    )


def readings(node: str, seq: int) -> bytes:
    return (
        f'{{"v":1,"type":"readings","node_id":"{node}","boot_id":1,"seq":{seq},'
        f'"time_base":"uptime_ms","channels":[["current","A"]],'
        f'"samples":[[{1000 * seq},[1.5]]]}}'
    ).encode()


async def test_anonymous_clients_and_wrong_passwords_are_refused(site_broker: SiteBroker) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with client(site_broker, None):
            pass
    wrong = aiomqtt.Client(
        "localhost",
        site_broker.tls_port,
        username="pump-01",
        password="guess",
        tls_context=site_broker.tls(),
    )
    with pytest.raises(aiomqtt.MqttError):
        async with wrong:
            pass


async def test_plain_mqtt_on_the_lan_port_is_refused(site_broker: SiteBroker) -> None:
    plain_on_tls_port = aiomqtt.Client(
        "127.0.0.1", site_broker.tls_port, username="pump-01", password=USERS["pump-01"], timeout=3
    )
    with pytest.raises(aiomqtt.MqttError):
        async with plain_on_tls_port:
            pass


async def test_a_node_cannot_speak_for_another_node_or_command_one(
    site_broker: SiteBroker, tmp_path: Path
) -> None:
    cfg = gateway_config(
        tmp_path,
        site="s1",
        mqtt={
            "enabled": True,
            "url": f"mqtt://127.0.0.1:{site_broker.plain_port}",
            "username": "fieldgate-gateway",
            "password": USERS["fieldgate-gateway"],
        },
    )
    async with (
        running_gateway(cfg),
        client(site_broker, "pump-01") as pump1,
        client(site_broker, "pump-02") as pump2,
    ):
        await pump1.subscribe("fieldgate/s1/pump-01/#", qos=1)
        # pump-02 forges a reading for pump-01 (right payload, pump-01's topic), then a
        # REBOOT command to pump-01; then sends its own reading, which must arrive.
        await pump2.publish("fieldgate/s1/pump-01/readings", readings("pump-01", 2), qos=1)
        await pump2.publish(
            "fieldgate/s1/pump-01/cmd",
            b'{"v":1,"type":"cmd","node_id":"pump-01","cmd_id":1,"kind":"reboot","args":{}}',
            qos=1,
        )
        await pump2.publish("fieldgate/s1/pump-02/readings", readings("pump-02", 1), qos=1)
        await pump1.publish("fieldgate/s1/pump-01/readings", readings("pump-01", 1), qos=1)
        await wait_until(
            lambda: len(journal_keys(cfg)) >= 2, what="the two genuine readings journaled"
        )
        await asyncio.sleep(0.5)  # time for anything forged to arrive, if the broker let it
        assert sorted(journal_keys(cfg)) == [("pump-01", 1, 1), ("pump-02", 1, 1)]

        got: list[str] = []

        async def collect() -> None:
            async for message in pump1.messages:
                got.append(str(message.topic))

        reader = asyncio.create_task(collect())
        await asyncio.sleep(1.0)
        reader.cancel()
        assert "fieldgate/s1/pump-01/cmd" not in got, "a forged command reached the node"
        assert "fieldgate/s1/pump-01/ack" in got, "the gateway's ack (its own right) did arrive"


async def test_the_gateway_ingests_over_tls_with_its_own_credentials(
    site_broker: SiteBroker, tmp_path: Path
) -> None:
    cfg = gateway_config(
        tmp_path,
        site="s1",
        mqtt={
            "enabled": True,
            "url": f"mqtts://localhost:{site_broker.tls_port}",
            "tls_ca_file": str(site_broker.ca),
            "username": "fieldgate-gateway",
            "password": USERS["fieldgate-gateway"],
        },
    )
    async with running_gateway(cfg), client(site_broker, "pump-01") as pump1:
        await pump1.publish("fieldgate/s1/pump-01/readings", readings("pump-01", 1), qos=1)
        await wait_until(lambda: journal_keys(cfg) == [("pump-01", 1, 1)], what="TLS ingest")


def test_doctor_tells_a_wrong_ca_from_good_credentials(
    site_broker: SiteBroker, tmp_path: Path
) -> None:
    def broker_check(ca: Path) -> str:
        cfg = load_config(
            data_dir=str(tmp_path / "var"),
            mqtt={
                "url": f"mqtts://localhost:{site_broker.tls_port}",
                "tls_ca_file": str(ca),
                "username": "fieldgate-gateway",
                "password": USERS["fieldgate-gateway"],
            },
        )
        finding = check_broker(cfg)
        return f"{finding.status}: {finding.message}"

    assert broker_check(site_broker.ca).startswith("ok")
    other = tmp_path / "other"
    other.mkdir()
    other_ca = make_server_certs(other).ca
    verdict = broker_check(other_ca)
    assert verdict.startswith("fail")
    assert "TLS" in verdict
