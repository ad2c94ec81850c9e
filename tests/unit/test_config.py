"""An invalid configuration stops start-up with the key path and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "deploy" / "gateway.example.toml"


def test_the_shipped_example_config_is_valid() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.journal.synchronous == "FULL"
    assert cfg.journal_path == Path("var/journal.db")


@pytest.mark.parametrize(
    ("toml", "key", "reason"),
    [
        ('[mqtt]\nurl = "http://broker"\n', "mqtt.url", "mqtt://host:port"),
        ("[queue]\nmax_messages = 0\n", "queue.max_messages", "greater than or equal to 1"),
        ('[queue]\noverflow = "drop_oldest"\n', "queue.overflow", "'block' or 'drop_newest'"),
        ("[mqtt]\nurll = 1\n", "mqtt.urll", "unknown key"),
        ("[[serial.ports]]\nbaud = 9600\n", "serial.ports.0.path", "Field required"),
        ('site = "has space"\n', "site", "pattern"),
    ],
)
def test_bad_values_name_the_key_and_the_reason(
    tmp_path: Path, toml: str, key: str, reason: str
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert reason in info.value.reason


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[mqtt\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(path)
    assert info.value.key == str(path)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[mqtt]\nurl = "mqtt://file:1883"\n')
    monkeypatch.setenv("FIELDGATE_MQTT__URL", "mqtt://env:1883")
    assert load_config(path).mqtt.url == "mqtt://env:1883"


def test_without_data_dir_a_systemd_service_keeps_its_data_in_its_state_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # systemd sets STATE_DIRECTORY for a unit with StateDirectory= (the shipped unit does);
    # its working directory must not decide where the journal goes.
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/fieldgate:/var/lib/other")
    assert load_config().data_dir == Path("/var/lib/fieldgate")
    assert load_config().journal_path == Path("/var/lib/fieldgate/journal.db")


def test_without_data_dir_or_a_service_manager_data_goes_under_the_working_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert load_config().data_dir == Path("var")


def test_a_configured_data_dir_beats_the_service_managers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/fieldgate")
    cfg = tmp_path / "g.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    assert load_config(cfg).data_dir == tmp_path / "data"
