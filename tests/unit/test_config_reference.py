"""docs/configuration.md documents every config key and is what the config model says today."""

from __future__ import annotations

from pathlib import Path

from gateway.config import GatewayConfig
from gateway.config_reference import EXAMPLE, example_comments, render, walk

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_key_has_a_meaning() -> None:
    keys = list(walk(GatewayConfig, "", example_comments(EXAMPLE.read_text())))
    undocumented = [key.path for key in keys if not key.meaning.strip()]
    assert len(keys) > 100
    assert undocumented == [], "give these a docstring under the field: " + ", ".join(undocumented)


def test_a_nested_list_and_a_table_by_name_are_both_listed() -> None:
    paths = {key.path for key in walk(GatewayConfig, "", {})}
    assert "serial.ports[].baud" in paths
    assert "alerts.rules.NAME.hysteresis" in paths
    assert "outputs.email.password" in paths


def test_the_committed_reference_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: python -m gateway.config_reference > docs/configuration.md"
    )
