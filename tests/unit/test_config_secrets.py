"""Secrets in the config: taken from the environment or a file, never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError


def test_check_never_prints_the_broker_password_from_the_environment(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--check"],
        env={**os.environ, "FIELDGATE_MQTT__PASSWORD": "hunter2-secret"},
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert "hunter2-secret" not in done.stdout + done.stderr
    assert '"password": "**********"' in done.stdout


def test_a_password_file_is_read_at_start_and_kept_secret(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.pass"
    secret.write_text("from-a-file\n")
    cfg = load_config(mqtt={"username": "gw", "password_file": str(secret)})
    assert cfg.mqtt.password_value() == "from-a-file"
    assert "from-a-file" not in repr(cfg) + cfg.model_dump_json()


def test_an_unreadable_password_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(mqtt={"password_file": str(tmp_path / "missing")})
    assert err.value.key == "mqtt"
    assert "password_file" in err.value.reason
