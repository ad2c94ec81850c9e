"""`fieldgate run` as an operator meets it: a version, JSON logs, one-line operational errors."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.fixtures.cli import FIELDGATE, fieldgate
from tests.fixtures.ports import free_port


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'data_dir = "{tmp_path / "var"}"\n[mqtt]\nenabled = false\n' + extra)
    return path


def test_version() -> None:
    done = fieldgate("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("fieldgate ")
    assert done.stdout.split()[1][0].isdigit()


def test_a_metrics_port_in_use_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, f"[metrics]\nport = {port}\n")
        done = subprocess.run(
            [*FIELDGATE, "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in errors[0]
    assert "metrics.port" in errors[0]
    assert "Traceback" not in done.stderr


def test_an_mqtt_port_out_of_range_is_refused_by_check(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[mqtt]\nurl = "mqtt://127.0.0.1:99999"\n')
    done = fieldgate("run", "--check", "--config", str(config))
    assert done.returncode == 2
    assert "mqtt.url" in done.stderr
    assert "1-65535" in done.stderr


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"[metrics]\nport = {free_port()}\n")
    proc = subprocess.Popen(
        [*FIELDGATE, "run", "--config", str(config), "--log-format", "json"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "var" / "journal.db").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert lines, "no log lines"
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any("journal open" in line["message"] for line in lines)
