"""The shipped systemd unit is valid, sandboxed, and the install scripts do what they say."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "fieldgate.service"
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def unit_for(tmp_path: Path, fieldgate: Path) -> Path:
    """The unit as install.sh writes it, with ExecStart pointing at an existing binary."""
    unit = tmp_path / "fieldgate.service"
    unit.write_text(UNIT.read_text().replace("/opt/fieldgate/.venv/bin/fieldgate", str(fieldgate)))
    return unit


@needs_systemd_analyze
def test_the_unit_passes_systemd_analyze_verify_without_a_warning(tmp_path: Path) -> None:
    unit = unit_for(tmp_path, Path(sys.executable).parent / "fieldgate")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


@needs_systemd_analyze
def test_the_units_exposure_is_rated_at_most_3() -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for fieldgate\.service: ([0-9.]+)", done.stdout)
    assert match, done.stdout[-2000:] + done.stderr
    assert float(match.group(1)) <= 3.0


def test_the_unit_runs_as_an_unprivileged_notify_service_with_a_watchdog() -> None:
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if re.match(r"^\w+=", line)
    )
    assert settings["Type"] == "notify"
    assert settings["User"] == "fieldgate"
    assert settings["ProtectSystem"] == "strict"
    assert settings["Restart"] == "always"
    assert int(settings["WatchdogSec"].rstrip("s")) > 0
    assert settings["CapabilityBoundingSet"] == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="the install script needs root (it creates a user)")
def test_install_is_idempotent_keeps_config_and_uninstall_keeps_data(tmp_path: Path) -> None:
    prefix, etc, data, units = (tmp_path / d for d in ("opt", "etc", "lib", "units"))
    prefix.mkdir()
    units.mkdir()
    # Reuse this venv instead of building one (FIELDGATE_INSTALL_SKIP_PIP): the test is about
    # what the script sets up around it.
    (prefix / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {
        **os.environ,
        "PREFIX": str(prefix),
        "ETC": str(etc),
        "DATA": str(data),
        "UNIT_DIR": str(units),
        "FIELDGATE_INSTALL_SKIP_PIP": "1",
    }

    def install() -> None:
        done = subprocess.run(
            ["bash", str(REPO / "deploy" / "install.sh"), "--no-start"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    install()
    user = pwd.getpwnam("fieldgate")
    assert user.pw_shell.endswith("nologin")
    assert "dialout" in [g.gr_name for g in grp.getgrall() if "fieldgate" in g.gr_mem]
    config = etc / "gateway.toml"
    assert f'data_dir = "{data}"' in config.read_text()
    assert data.stat().st_uid == user.pw_uid
    assert oct(data.stat().st_mode)[-3:] == "750"
    unit = (units / "fieldgate.service").read_text()
    assert f"ExecStart={prefix}/.venv/bin/fieldgate run --config {etc}/gateway.toml" in unit
    assert f"ReadWritePaths={data}" in unit

    config.write_text(config.read_text() + "\n# edited by the operator\n")
    install()
    assert "# edited by the operator" in config.read_text(), "a rerun must keep the config"

    (data / "journal.db").write_bytes(b"acknowledged data")
    uninstall = ["bash", str(REPO / "deploy" / "uninstall.sh")]
    done = subprocess.run(uninstall, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert not prefix.exists()
    assert not (units / "fieldgate.service").exists()
    assert (data / "journal.db").read_bytes() == b"acknowledged data"
    assert config.exists()

    done = subprocess.run(
        [*uninstall, "--purge"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert not data.exists()
    assert not etc.exists()
    with pytest.raises(KeyError):
        pwd.getpwnam("fieldgate")
