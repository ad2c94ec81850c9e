"""[outputs] config: safe defaults, and every invalid value is named by its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.events import AlertEventKind, Severity
from gateway.outputs.config import OutputsConfig, parse_outputs_config
from gateway.protocol.messages import CommandKind
from tests.unit.outputs.helpers import make_event


def _error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_outputs_config(data)
    return info.value


def test_defaults_enable_nothing_that_needs_a_server() -> None:
    cfg = OutputsConfig()
    assert not cfg.local_mqtt.enabled
    assert not cfg.webhook.enabled
    assert not cfg.email.enabled
    assert not cfg.script_hook.enabled
    assert cfg.node_actions.actions == ()
    assert cfg.outbox_path(Path("/var/fg")) == Path("/var/fg/outbox.db")


def test_a_full_config_parses_from_toml_like_data(tmp_path: Path) -> None:
    script = tmp_path / "hook.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    cfg = parse_outputs_config(
        {
            "local_mqtt": {"enabled": True, "url": "mqtt://127.0.0.1:1884", "retain": True},
            "node_actions": {
                "actions": [
                    {
                        "rule": "vibration_high",
                        "command": "actuate",
                        "args": {"output": "motor", "state": False},
                    },
                    {
                        "min_severity": "critical",
                        "command": "actuate",
                        "node_id": "siren-1",
                        "args": {"output": "buzzer", "state": True},
                    },
                ]
            },
            "script_hook": {"enabled": True, "path": str(script), "kinds": ["raised"]},
            "webhook": {
                "enabled": True,
                "url": "https://example.invalid/hook",
                "headers": {"Authorization": "Bearer s3cret"},
            },
            "email": {
                "enabled": True,
                "host": "smtp.example.invalid",
                "from_addr": "gw@example.invalid",
                "to_addrs": ["ops@example.invalid"],
                "min_severity": "critical",
            },
        }
    )
    first = cfg.node_actions.actions[0]
    assert first.command_kind is CommandKind.ACTUATE
    assert first.matches(make_event(1, rule="vibration_high"))
    assert not first.matches(make_event(1, rule="battery_low"))
    assert not first.matches(make_event(1, kind=AlertEventKind.CLEARED))
    assert "s3cret" not in repr(cfg.webhook)
    assert cfg.email.wants(make_event(1, severity=Severity.CRITICAL))
    assert not cfg.email.wants(make_event(1, severity=Severity.WARNING))


def test_unknown_key_is_named() -> None:
    err = _error({"webhook": {"enabled": True, "url": "http://x", "retries": 3}})
    assert err.key == "outputs.webhook.retries"


def test_enabled_webhook_without_url_names_the_url() -> None:
    err = _error({"webhook": {"enabled": True}})
    assert err.key == "outputs.webhook"
    assert "url" in err.reason


def test_bad_webhook_url_is_named() -> None:
    assert _error({"webhook": {"url": "ftp://x/y"}}).key == "outputs.webhook.url"


def test_bad_local_mqtt_url_and_qos_are_named() -> None:
    assert _error({"local_mqtt": {"url": "http://x"}}).key == "outputs.local_mqtt.url"
    assert _error({"local_mqtt": {"qos": 3}}).key == "outputs.local_mqtt.qos"


def test_email_needs_relay_sender_and_recipients() -> None:
    err = _error({"email": {"enabled": True, "host": "relay", "from_addr": "a@b"}})
    assert err.key == "outputs.email"
    assert "to_addrs" in err.reason
    assert _error({"email": {"to_addrs": ["nobody"]}}).key == "outputs.email.to_addrs"


def test_actuate_action_needs_output_and_state() -> None:
    err = _error({"node_actions": {"actions": [{"command": "actuate", "args": {"output": "m"}}]}})
    assert err.key == "outputs.node_actions.actions.0"
    assert "args.state" in err.reason


def test_unknown_command_is_named() -> None:
    err = _error({"node_actions": {"actions": [{"command": "explode"}]}})
    assert err.key == "outputs.node_actions.actions.0.command"


def test_unknown_severity_is_named() -> None:
    err = _error({"email": {"min_severity": "urgent"}})
    assert err.key == "outputs.email.min_severity"


def test_script_hook_must_be_an_executable_file(tmp_path: Path) -> None:
    script = tmp_path / "hook.sh"
    script.write_text("#!/bin/sh\n")
    err = _error({"script_hook": {"enabled": True, "path": str(script)}})
    assert err.key == "outputs.script_hook"
    assert "not executable" in err.reason
    err = _error({"script_hook": {"enabled": True, "path": str(tmp_path / "missing")}})
    assert "not a file" in err.reason


def test_webhook_may_not_override_the_idempotency_key() -> None:
    err = _error({"webhook": {"url": "http://x/", "headers": {"Idempotency-Key": "fixed"}}})
    assert "Idempotency-Key" in err.reason
