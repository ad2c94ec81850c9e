"""The [alerts] section: sane defaults, rules by name, errors that name the rule and the key."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime

import pytest

from gateway.alerts.config import (
    DEFAULT_RULES,
    AlertsConfig,
    AnomalyRule,
    BatteryRule,
    GapRule,
    SilentRule,
    ThresholdRule,
    load_alerts_config,
)
from gateway.errors import ConfigError

EXAMPLE = """
renotify_interval_s = 600
escalation_timeout_s = 1800

[rules.high_current]
kind = "threshold"
channel = "current"
above = 12.0
hysteresis = 0.5
min_duration_s = 3
severity = "critical"
nodes = ["pump-*"]

[rules.battery_low]
kind = "battery"
below_mv = 3100

[rules.data_gap]
kind = "gap"
enabled = false

[[silences]]
nodes = ["pump-07"]
daily = "22:00-06:00"
timezone = "Europe/Berlin"
reason = "night shift maintenance"

[[silences]]
start = 2025-06-01T08:00:00+02:00
end = 2025-06-01T12:00:00+02:00
rules = ["high_current"]
"""


def test_without_an_alerts_section_the_defaults_alert_on_score_silence_battery_and_gaps() -> None:
    rules = AlertsConfig().effective_rules()
    kinds = {type(rule) for rule in rules.values()}
    assert kinds == {AnomalyRule, SilentRule, BatteryRule, GapRule}
    assert rules == DEFAULT_RULES
    anomaly = rules["anomaly"]
    assert isinstance(anomaly, AnomalyRule)
    assert anomaly.source == "gateway"
    assert anomaly.threshold == 1.0


def test_configured_rules_join_the_defaults_replace_them_by_name_or_switch_them_off() -> None:
    cfg = load_alerts_config(tomllib.loads(EXAMPLE))
    rules = cfg.effective_rules()
    assert set(rules) == {"anomaly", "node_silent", "battery_low", "high_current"}
    battery = rules["battery_low"]
    assert isinstance(battery, BatteryRule)
    assert battery.below_mv == 3100
    high = rules["high_current"]
    assert isinstance(high, ThresholdRule)
    assert (high.above, high.hysteresis, high.min_duration_s) == (12.0, 0.5, 3)
    assert cfg.silences[0].daily_range() is not None
    assert cfg.silences[1].start == datetime(2025, 6, 1, 6, 0, tzinfo=UTC)


def test_use_default_rules_false_leaves_only_the_configured_rules() -> None:
    cfg = load_alerts_config(
        {"use_default_rules": False, "rules": {"quiet": {"kind": "silent", "after_s": 30}}}
    )
    assert list(cfg.effective_rules()) == ["quiet"]


def test_two_rules_of_the_same_name_are_refused_by_toml_itself() -> None:
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads('[rules.a]\nkind = "silent"\n[rules.a]\nkind = "gap"\n')


@pytest.mark.parametrize(
    ("alerts", "key", "reason"),
    [
        (
            {
                "rules": {
                    "hot": {"kind": "threshold", "channel": "t", "above": 80, "hysteresis": -1}
                }
            },
            "alerts.rules.hot.threshold.hysteresis",
            "greater than or equal to 0",
        ),
        (
            {"rules": {"hot": {"kind": "threshold", "channel": "t"}}},
            "alerts.rules.hot.threshold",
            "exactly one of 'above' or 'below'",
        ),
        (
            {"rules": {"hot": {"kind": "threshold", "channel": "t", "above": 1, "below": 0}}},
            "alerts.rules.hot.threshold",
            "exactly one of 'above' or 'below'",
        ),
        ({"rules": {"hot": {"kind": "temperature"}}}, "alerts.rules.hot", "'threshold'"),
        (
            {"rules": {"score": {"kind": "anomaly", "source": "shadow"}}},
            "alerts.rules.score.anomaly.source",
            "'gateway', 'node' or 'fused'",
        ),
        (
            {"rules": {"quiet": {"kind": "silent", "after_s": 0}}},
            "alerts.rules.quiet.silent.after_s",
            "greater than 0",
        ),
        (
            {"rules": {"quiet": {"kind": "silent", "afters": 5}}},
            "alerts.rules.quiet.silent.afters",
            "unknown key",
        ),
        (
            {"rules": {"gaps": {"kind": "gap", "lost": 0}}},
            "alerts.rules.gaps.gap.lost",
            "greater than or equal to 1",
        ),
        (
            {"rules": {"bat": {"kind": "battery", "nodes": []}}},
            "alerts.rules.bat.battery.nodes",
            "at least one node",
        ),
        (
            {"rules": {"bat": {"kind": "battery", "nodes": ["pump 1"]}}},
            "alerts.rules.bat.battery.nodes",
            "not a node id or glob",
        ),
        (
            {"rules": {"bat": {"kind": "battery", "severity": "fatal"}}},
            "alerts.rules.bat.battery.severity",
            "'info', 'warning' or 'critical'",
        ),
        ({"rules": {"a:b": {"kind": "silent"}}}, "alerts.rules", "rule name 'a:b'"),
        ({"silences": [{"daily": "25:00-01:00"}]}, "alerts.silences.0.daily", "HH:MM-HH:MM"),
        ({"silences": [{"daily": "22:00-22:00"}]}, "alerts.silences.0.daily", "same time"),
        (
            {"silences": [{"daily": "22:00-06:00", "timezone": "Mars/Olympus"}]},
            "alerts.silences.0.timezone",
            "unknown time zone",
        ),
        (
            {"silences": [{"start": "2025-01-01T00:00:00", "end": "2025-01-02T00:00:00Z"}]},
            "alerts.silences.0.start",
            "UTC offset",
        ),
        (
            {"silences": [{"start": "2025-01-02T00:00:00Z", "end": "2025-01-01T00:00:00Z"}]},
            "alerts.silences.0",
            "'end' must be after 'start'",
        ),
        ({"silences": [{"nodes": ["a"]}]}, "alerts.silences.0", "either 'start' and 'end'"),
        (
            {"silences": [{"daily": "22:00-06:00", "rules": ["nope"]}]},
            "alerts",
            "silences.0.rules: no enabled rule named 'nope'",
        ),
        ({"renotify_interval_s": -1}, "alerts.renotify_interval_s", "greater than or equal"),
    ],
)
def test_invalid_alert_config_names_the_rule_and_the_key(
    alerts: dict[str, object], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_alerts_config(alerts)
    assert info.value.key == key
    assert reason in info.value.reason


def test_the_example_in_docs_alerts_md_is_valid() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[3] / "docs" / "alerts.md").read_text(encoding="utf-8")
    example = doc.split("### Example", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    cfg = load_alerts_config(tomllib.loads(example)["alerts"])
    assert set(cfg.effective_rules()) == {
        "anomaly",
        "node_silent",
        "battery_low",
        "high_current",
        "node_model",
        "drift",
    }
    assert len(cfg.silences) == 2
