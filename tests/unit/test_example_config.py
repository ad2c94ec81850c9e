"""deploy/gateway.example.toml documents scoring, alerts and outputs, and every part of it,
including the blocks shown commented out, is a valid configuration."""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.alerts.config import AnomalyRule, SilentRule, ThresholdRule
from gateway.cli import app
from gateway.config import load_config
from gateway.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "deploy" / "gateway.example.toml"


def _uncommented(text: str, header: str) -> str:
    """``text`` with the commented-out block that starts at ``# <header>`` switched on."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# {header}"))
    end = start
    while end < len(lines) and lines[end].startswith("#"):
        end += 1
    block = [re.sub(r"^# ?", "", line) for line in lines[start:end]]
    return "\n".join([*lines[:start], *block, *lines[end:]]) + "\n"


def test_example_scoring_section_sets_a_baseline_long_enough_for_the_pump() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.scoring.enabled
    assert cfg.scoring.calibration_rows == 1800
    assert cfg.scoring.missing_channels == "baseline"
    assert cfg.scoring.disagreement.min_duration_s == 30.0


def test_example_alerts_add_rules_to_the_defaults_and_replace_one() -> None:
    alerts = load_config(EXAMPLE).alerts
    rules = alerts.effective_rules()
    assert set(rules) == {
        "anomaly", "battery_low", "data_gap", "node_silent", "pressure_high", "node_model",
    }  # fmt: skip
    pressure = rules["pressure_high"]
    assert isinstance(pressure, ThresholdRule)
    assert (pressure.channel, pressure.above, pressure.hysteresis) == ("pressure", 1.3, 0.05)
    assert pressure.nodes == ("pump-*",)
    silent = rules["node_silent"]
    assert isinstance(silent, SilentRule)
    assert silent.after_s == 300.0  # the example's, not the default 120 s
    node_model = rules["node_model"]
    assert isinstance(node_model, AnomalyRule)
    assert node_model.source == "node"


def test_example_silence_window_is_a_nightly_window_in_local_time() -> None:
    (window,) = load_config(EXAMPLE).alerts.silences
    assert window.nodes == ("pump-02",)
    assert window.timezone == "Europe/Berlin"
    assert window.daily_range() == (time(22, 0), time(6, 0))


def test_example_outputs_alert_on_the_local_broker_and_keep_remote_ones_off() -> None:
    outputs = load_config(EXAMPLE).outputs
    assert outputs.local_mqtt.enabled
    assert outputs.local_mqtt.url == "mqtt://127.0.0.1:1883"
    assert not outputs.script_hook.enabled
    assert not outputs.webhook.enabled
    assert outputs.webhook.url == "https://ops.example.com/fieldgate/alerts"
    assert not outputs.email.enabled


@pytest.mark.parametrize(
    "header",
    ["[outputs.email]", "[[alerts.silences]]", "[[outputs.node_actions.actions]]",
     "[scoring.channel_map]"],
)  # fmt: skip
def test_commented_out_example_blocks_are_valid_when_switched_on(
    tmp_path: Path, header: str
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(_uncommented(EXAMPLE.read_text(), header))
    cfg = load_config(path)
    if header == "[outputs.email]":
        assert cfg.outputs.email.enabled
        assert cfg.outputs.email.to_addrs == ("ops@example.com",)
    elif header == "[[alerts.silences]]":
        assert len(cfg.alerts.silences) == 2
        assert cfg.alerts.silences[1].rules == ("pressure_high",)
    elif header == "[[outputs.node_actions.actions]]":
        (action,) = cfg.outputs.node_actions.actions
        assert action.rule == "pressure_high"
    else:
        assert cfg.scoring.channel_map == {"vib_rms": "Accelerometer1RMS", "current": "Current"}


def test_an_enabled_script_hook_without_its_script_is_refused_with_the_key(
    tmp_path: Path,
) -> None:
    text = EXAMPLE.read_text().replace(
        "[outputs.script_hook]          # runs a local executable per event: event JSON on stdin\n"
        "enabled = false\n# path",
        "[outputs.script_hook]\nenabled = true\npath",
    )
    assert 'path = "/usr/local/bin/on-alert"' in text
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key.startswith("outputs.script_hook")
    assert "/usr/local/bin/on-alert" in info.value.reason


def test_fieldgate_run_check_accepts_the_example() -> None:
    result = CliRunner().invoke(app, ["run", "--check", "--config", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert '"pressure_high"' in result.stdout


def test_example_forward_section_is_off_and_keeps_the_token_out_of_the_file() -> None:
    fwd = load_config(EXAMPLE).forward
    assert not fwd.enabled
    assert fwd.token is None
    assert fwd.token_file is None
    assert fwd.interval_s == 60.0
    assert fwd.budgets.total_bytes == 256 * 1024 * 1024
