"""The shipped bridge config: a site's alerts reach the central broker, as that site only.

deploy/mosquitto/bridge.conf runs in a real site mosquitto and bridges into a real central
mosquitto running deploy/mosquitto/central/mosquitto.conf and its ACL, with paths and ports
changed for the test and plain TCP on loopback instead of TLS (the TLS lines are the stock
mosquitto options; the broker-side TLS setup is what tests/deploy/test_mosquitto_config.py
exercises). A second site whose bridge is rewritten to publish under the first site's
topics is refused by the central ACL, while its own topics still get through (so the
refusal is the ACL's, not a dead bridge).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from tests.fixtures.ports import free_port, wait_for_port
from tests.fixtures.servers import _find, _stop

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
PASSWORDS = {"site-a": "a-secret", "site-b": "b-secret", "fieldgate-central-reader": "r-secret"}
_ROOT = "user root\n" if os.geteuid() == 0 else ""
pytestmark = pytest.mark.timeout(60)


def _start(workdir: Path, conf: str) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "mosquitto.conf"
    path.write_text(conf + _ROOT)
    log = (workdir / "log").open("ab")
    proc = subprocess.Popen([_find("mosquitto", "/usr/sbin/mosquitto"), "-c", str(path)],
                            stdout=log, stderr=log)  # fmt: skip
    log.close()
    return proc


def _central(workdir: Path, port: int) -> str:
    etc = workdir / "etc"
    etc.mkdir(parents=True)
    passwd = etc / "passwd"
    passwd.write_text("".join(f"{u}:{p}\n" for u, p in PASSWORDS.items()))
    subprocess.run([_find("mosquitto_passwd"), "-U", str(passwd)], check=True)
    (etc / "acl").write_text((SHIPPED / "central" / "acl").read_text())
    conf = (SHIPPED / "central" / "mosquitto.conf").read_text()
    conf = re.sub(r"^(certfile|keyfile|tls_version) .*\n", "", conf, flags=re.M)
    conf = conf.replace("listener 8883", f"listener {port} 127.0.0.1")
    conf = conf.replace("/etc/mosquitto/central/", f"{etc}/")
    return conf.replace("/var/lib/mosquitto/", f"{workdir}/")


def _site(workdir: Path, port: int, central_port: int, site: str, user: str) -> str:
    bridge = (SHIPPED / "bridge.conf").read_text()
    bridge = re.sub(r"^(bridge_cafile|bridge_tls_version) .*\n", "", bridge, flags=re.M)
    bridge = bridge.replace("CENTRAL_HOST:8883", f"127.0.0.1:{central_port}")
    bridge = bridge.replace("remote_username SITE", f"remote_username {user}")
    bridge = bridge.replace("SITE_PASSWORD", PASSWORDS[user]).replace("SITE", site)
    return f"listener {port} 127.0.0.1\nallow_anonymous true\n" + bridge


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[dict[str, int]]:
    ports = {name: free_port() for name in ("central", "site-a", "site-b")}
    procs = [_start(tmp_path / "central", _central(tmp_path / "central", ports["central"]))]
    try:
        wait_for_port("127.0.0.1", ports["central"])
        procs.append(_start(tmp_path / "a", _site(tmp_path / "a", ports["site-a"],
                                                  ports["central"], "site-a", "site-a")))  # fmt: skip
        # site-b's password, but its alerts rewritten to land under site-a's topics.
        spoof = _site(tmp_path / "b", ports["site-b"], ports["central"], "site-b", "site-b")
        spoof = spoof.replace("topic alerts/# out 1 fieldgate/site-b/ fieldgate/site-b/",
                              "topic alerts/# out 1 fieldgate/site-b/ fieldgate/site-a/")  # fmt: skip
        procs.append(_start(tmp_path / "b", spoof))
        for name in ("site-a", "site-b"):
            wait_for_port("127.0.0.1", ports[name])
        yield ports
    finally:
        for proc in procs:
            _stop(proc)


class Reader:
    def __init__(self, port: int) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="central-reader")
        self.client.username_pw_set(
            "fieldgate-central-reader", PASSWORDS["fieldgate-central-reader"]
        )
        self.client.on_message = lambda _c, _u, m: self._add(m.topic, bytes(m.payload))
        self.client.on_connect = lambda c, *_: c.subscribe("fieldgate/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _add(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.got.append((topic, payload))

    def payloads(self) -> set[bytes]:
        with self.lock:
            return {p for _, p in self.got}


def _publish_until(port: int, reader: Reader, topic: str, payload: bytes) -> None:
    """Publish (QoS 1) on a site broker every 0.5 s until the centre has it (the bridge may
    still be connecting), or fail after 20 s."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        deadline = time.monotonic() + 20
        while payload not in reader.payloads():
            assert time.monotonic() < deadline, f"{topic} never reached the central broker"
            client.publish(topic, payload, qos=1)
            time.sleep(0.5)
    finally:
        client.loop_stop()
        client.disconnect()


def test_alerts_and_status_cross_readings_stay_and_no_site_speaks_for_another(
    brokers: dict[str, int],
) -> None:
    reader = Reader(brokers["central"])
    try:
        _publish_until(brokers["site-a"], reader, "fieldgate/site-a/alerts/pump-01", b"A1")
        _publish_until(brokers["site-a"], reader, "fieldgate/site-a/pump-01/status", b"S1")
        # Control: site-b's bridge works for its own topics...
        _publish_until(brokers["site-b"], reader, "fieldgate/site-b/pump-09/status", b"B1")
        # ...but what it rewrites into site-a's topics, and readings, never arrive.
        site_b = paho.Client(paho.CallbackAPIVersion.VERSION2)
        site_b.connect("127.0.0.1", brokers["site-b"])
        site_a = paho.Client(paho.CallbackAPIVersion.VERSION2)
        site_a.connect("127.0.0.1", brokers["site-a"])
        for client in (site_a, site_b):
            client.loop_start()
        for _ in range(6):
            site_b.publish("fieldgate/site-b/alerts/pump-09", b"SPOOF", qos=1)
            site_a.publish("fieldgate/site-a/pump-01/readings", b"R1", qos=1)
            time.sleep(0.5)
        _publish_until(brokers["site-b"], reader, "fieldgate/site-b/pump-09/status", b"B2")
        for client in (site_a, site_b):
            client.loop_stop()
            client.disconnect()
        topics = {t for t, _ in reader.got}
        assert "fieldgate/site-a/alerts/pump-01" in topics
        assert b"SPOOF" not in reader.payloads()
        assert b"R1" not in reader.payloads()
    finally:
        reader.client.loop_stop()
        reader.client.disconnect()
