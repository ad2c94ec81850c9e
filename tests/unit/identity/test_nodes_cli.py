"""`fieldgate nodes pins|unpin` as an operator runs them (a separate process)."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.identity.pins import read_pins, write_pins
from tests.fixtures.cli import fieldgate


def test_pins_lists_and_unpin_releases(tmp_path: Path) -> None:
    pins = tmp_path / "node_pins.json"
    write_pins(pins, {"pump-01": {"channel": "serial:/dev/ttyACM0", "since_ms": 0}})
    env = {**os.environ, "FIELDGATE_DATA_DIR": str(tmp_path)}

    listed = fieldgate("nodes", "pins", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "pump-01\tserial:/dev/ttyACM0\tlearned 1970-01-01 00:00:00 UTC" in listed.stdout

    unknown = fieldgate("nodes", "unpin", "pump-99", env=env)
    assert unknown.returncode == 1
    assert "pump-99: was not pinned" in unknown.stdout

    done = fieldgate("nodes", "unpin", "pump-01", env=env)
    assert done.returncode == 0
    assert read_pins(pins) == {}
