"""The compose site stack is valid and consistent, though no Docker engine runs here.

`docker compose config` needs an engine-less compose plugin this machine does not have, so
the file is validated against the Compose Specification's JSON schema (check-jsonschema
ships it), and what the stack wires together is checked against the project's own files:
every mounted file exists, the gateway's config validates, Grafana's provisioning points at
the dashboard that is mounted, and the broker keeps the production config's limits.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "deploy" / "compose"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((STACK / "compose.yaml").read_text())
    return data


def test_the_compose_file_matches_the_compose_specification() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(STACK / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_would_catch_a_broken_file(tmp_path: Path) -> None:
    broken = compose()
    broken["services"]["gateway"]["restart"] = ["always"]  # must be a string
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0


def test_every_bind_mount_and_the_build_context_exist() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (STACK / source).resolve().exists(), f"{name}: {source} does not exist"
    build = services["gateway"]["build"]
    assert (STACK / build["context"] / build["dockerfile"]).resolve().is_file()


def test_the_gateway_config_is_valid_and_points_at_the_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FIELDGATE_MQTT__PASSWORD", "from-the-env-file")
    cfg = load_config(STACK / "gateway.toml")
    assert cfg.mqtt.url == "mqtt://mosquitto:1883"
    assert cfg.mqtt.password_value() == "from-the-env-file"
    services = compose()["services"]
    assert "FIELDGATE_MQTT__PASSWORD" in services["gateway"]["environment"]
    forward = cfg.model_dump()["forward"]
    assert forward["enabled"] is True
    assert forward["url"].startswith("http://victoriametrics:8428")


def test_grafana_provisions_the_fleet_dashboard_from_the_mounted_folder() -> None:
    provider = yaml.safe_load(
        (STACK / "grafana/provisioning/dashboards/fieldgate.yaml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    mounts = compose()["services"]["grafana"]["volumes"]
    source = next(v.split(":")[0] for v in mounts if v.split(":")[1] == path)
    dashboards = list((STACK / source).resolve().glob("*.json"))
    assert dashboards, "no dashboard JSON where Grafana is told to look"
    for dashboard in dashboards:
        json.loads(dashboard.read_text())
    datasource = yaml.safe_load(
        (STACK / "grafana/provisioning/datasources/victoriametrics.yaml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://victoriametrics:8428"


def _directives(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.setdefault(key, value)
    return out


def test_the_stacks_broker_keeps_the_production_limits_and_acl() -> None:
    shipped = _directives(REPO / "deploy/mosquitto/fieldgate.conf")
    stack = _directives(STACK / "mosquitto.conf")
    for key in (
        "allow_anonymous",
        "max_queued_messages",
        "max_queued_bytes",
        "max_packet_size",
        "memory_limit",
        "tls_version",
        "persistence",
    ):
        assert stack[key] == shipped[key], key
    acl_mount = next(
        v for v in compose()["services"]["mosquitto"]["volumes"] if v.startswith("../mosquitto/acl")
    )
    assert acl_mount.split(":")[1] == stack["acl_file"]
