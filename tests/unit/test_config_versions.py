"""Config files of an older format are migrated with a log line, a newer one is refused."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.config import CONFIG_VERSION, load_config
from gateway.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_a_format_1_file_keeps_its_meaning_for_ble(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Written before config_version existed: BLE on, transport left to the default of the
    # time (a USB dongle). Read as format 2 it would silently switch to BlueZ.
    path = write(tmp_path, '[ble]\nenabled = true\nnodes = ["vib-1"]\n')
    with caplog.at_level(logging.WARNING, logger="gateway.config"):
        cfg = load_config(path)
    assert cfg.ble.transport == "usb:0"
    assert cfg.config_version == CONFIG_VERSION
    assert "config format 1" in caplog.text


def test_a_current_file_uses_the_current_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, f"config_version = {CONFIG_VERSION}\n[ble]\nenabled = true\n")
    assert load_config(path).ble.transport == "bluez:hci0"


def test_a_file_for_a_newer_fieldgate_is_refused_with_instructions(tmp_path: Path) -> None:
    path = write(tmp_path, f"config_version = {CONFIG_VERSION + 1}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == "config_version"
    assert "upgrade fieldgate" in err.value.reason


@pytest.mark.parametrize("bad", ["0", '"2"', "true", "1.5"])
def test_a_nonsense_version_names_the_key(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f"config_version = {bad}\n"))
    assert err.value.key == "config_version"
