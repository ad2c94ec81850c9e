"""The [forward] section: off by default, the token a secret from env or file."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError


def test_off_by_default() -> None:
    assert not load_config().forward.enabled


def test_token_from_the_environment_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELDGATE_FORWARD__TOKEN", "t0ken-value")
    cfg = load_config(forward={"enabled": True})
    assert cfg.forward.authorization() == "Token t0ken-value"
    assert "t0ken-value" not in cfg.model_dump_json()
    assert "t0ken-value" not in repr(cfg)


def test_token_file_is_read_when_used_and_basic_auth_encodes_it(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("user:pw\n")
    cfg = load_config(forward={"token_file": str(token), "auth_scheme": "Basic"}).forward
    assert cfg.authorization() == "Basic " + base64.b64encode(b"user:pw").decode()
    token.write_text("user:rotated\n")
    assert cfg.authorization() == "Basic " + base64.b64encode(b"user:rotated").decode()


@pytest.mark.parametrize(
    ("section", "key"),
    [({"url": "influx:8086"}, "forward.url"),
     ({"precision": "s"}, "forward.precision"),
     ({"token": "a", "token_file": "/x"}, "forward"),
     ({"budgets": {"total_bytes": 10}}, "forward.budgets.total_bytes")],
)  # fmt: skip
def test_invalid_values_name_the_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(forward=section)
    assert err.value.key == key
