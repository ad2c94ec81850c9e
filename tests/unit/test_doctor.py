"""`fieldgate doctor`: each check catches the misconfiguration it exists for, and says the fix."""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig, load_config
from gateway.doctor import (
    check_ble,
    check_broker,
    check_clock,
    check_config,
    check_data_dir,
    check_disk,
    check_journal,
    check_metrics_port,
    check_serial,
)
from tests.fixtures.cli import fieldgate
from tests.fixtures.ports import free_port
from tests.fixtures.servers import Mosquitto
from tests.fixtures.tmpfs import mounted_tmpfs


def config(tmp_path: Path, **overrides: Any) -> GatewayConfig:
    return load_config(data_dir=str(tmp_path / "var"), **overrides)


def test_an_invalid_config_fails_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[mqtt]\nkeepalive_s = 1\n")
    finding, cfg = check_config(path)
    assert cfg is None
    assert finding.status == "fail"
    assert "mqtt.keepalive_s" in finding.message
    assert "docs/configuration.md" in finding.fix


def test_a_data_dir_under_a_file_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    finding = check_data_dir(load_config(data_dir=str(tmp_path / "file" / "var")))
    assert finding.status == "fail"
    assert "not a directory" in finding.message


def test_a_relative_data_dir_is_a_warning(tmp_path: Path) -> None:
    assert check_data_dir(load_config(data_dir="var")).status == "warn"
    assert check_data_dir(config(tmp_path)).status == "ok"


def test_a_journal_budget_larger_than_the_free_disk_is_a_warning(tmp_path: Path) -> None:
    assert check_disk(config(tmp_path)).status == "ok"
    huge = config(tmp_path, journal={"raw_budget_bytes": 10**18})
    finding = check_disk(huge)
    assert finding.status == "warn"
    assert "raw_budget_bytes" in finding.fix


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tiny", "1m") as mount:
        yield mount


def test_an_almost_full_disk_fails(tiny_disk: Path) -> None:
    finding = check_disk(load_config(data_dir=str(tiny_disk / "var")))
    assert finding.status == "fail"
    assert "MB free" in finding.message


def test_a_corrupt_journal_fails_and_a_sound_one_passes(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert check_journal(cfg).status == "ok"  # not created yet
    cfg.data_dir.mkdir(parents=True)
    db = sqlite3.connect(cfg.journal_path)
    db.execute("CREATE TABLE t (x)")
    db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5000)])
    db.commit()
    db.close()
    assert check_journal(cfg).status == "ok"
    with cfg.journal_path.open("r+b") as f:
        f.seek(4096 + 100)
        f.write(os.urandom(4096))
    finding = check_journal(cfg)
    assert finding.status == "fail"
    assert "move it aside" in finding.fix


def test_an_empty_journal_file_fails(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg.data_dir.mkdir(parents=True)
    cfg.journal_path.write_bytes(b"")
    assert check_journal(cfg).status == "fail"


def test_a_metrics_port_in_use_fails(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        finding = check_metrics_port(config(tmp_path, metrics={"port": port}))
    assert finding.status == "fail"
    assert "already running" in finding.fix
    assert check_metrics_port(config(tmp_path, metrics={"port": free_port()})).status == "ok"


def test_an_unreachable_broker_fails(tmp_path: Path) -> None:
    finding = check_broker(config(tmp_path, mqtt={"url": f"mqtt://127.0.0.1:{free_port()}"}))
    assert finding.status == "fail"
    assert "unreachable" in finding.message


def test_wrong_broker_credentials_fail_and_right_ones_pass(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", users={"gateway": "s3cret"})
    broker.start()
    try:

        def check(**mqtt: Any) -> str:
            cfg = config(tmp_path, mqtt={"url": broker.url, **mqtt})
            finding = check_broker(cfg)
            return f"{finding.status}: {finding.message}"

        assert check().startswith("fail")  # anonymous is refused
        assert check(username="gateway", password="wrong").startswith("fail")
        assert "credentials" in check(username="gateway", password="wrong")
        assert check(username="gateway", password="s3cret").startswith("ok")
    finally:
        broker.stop()


def test_a_missing_serial_device_fails_and_a_pty_passes(tmp_path: Path) -> None:
    leader, follower = os.openpty()
    try:
        cfg = config(
            tmp_path,
            serial={
                "ports": [{"path": "/dev/ttyFIELDGATE-missing"}, {"path": os.ttyname(follower)}]
            },
        )
        missing, present = check_serial(cfg)
    finally:
        os.close(leader)
        os.close(follower)
    assert missing.status == "fail"
    assert "by-id" in missing.fix
    assert present.status == "ok"


def test_an_unreachable_virtual_ble_controller_fails(tmp_path: Path) -> None:
    cfg = config(
        tmp_path, ble={"enabled": True, "transport": f"tcp-client:127.0.0.1:{free_port()}"}
    )
    assert check_ble(cfg).status == "fail"
    with socket.socket() as controller:
        controller.bind(("127.0.0.1", 0))
        controller.listen()
        port = controller.getsockname()[1]
        cfg = config(tmp_path, ble={"enabled": True, "transport": f"tcp-client:127.0.0.1:{port}"})
        assert check_ble(cfg).status == "ok"


def test_a_clock_in_1970_fails() -> None:
    finding = check_clock(lambda: 86_400.0)
    assert finding.status == "fail"
    assert "1970-01-02" in finding.message
    assert check_clock().status in ("ok", "warn")


def test_the_command_exits_nonzero_and_prints_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "var"}"\n[mqtt]\nurl = "mqtt://127.0.0.1:{free_port()}"\n'
        f"[metrics]\nport = {free_port()}\n"
    )
    done = fieldgate("doctor", "--config", str(path))
    assert done.returncode == 1
    assert "FAIL broker" in done.stdout
    assert "fix: start the broker" in done.stdout
    path.write_text(f'data_dir = "{tmp_path / "var"}"\n[mqtt]\nenabled = false\n')
    path.write_text(path.read_text() + f"[metrics]\nport = {free_port()}\n")
    done = fieldgate("doctor", "--config", str(path))
    assert done.returncode == 0, done.stdout
    assert "no problems found" in done.stdout


def test_a_missing_bluez_adapter_fails(tmp_path: Path) -> None:
    cfg = config(tmp_path, ble={"enabled": True, "transport": "bluez:hci97"})
    finding = check_ble(cfg)
    assert finding.status == "fail"
    assert "hci97" in finding.message
