"""sd_notify: the gateway tells systemd when it is ready, that it is alive, and that it stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.service_notify import ServiceNotifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(20)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_outside_a_service_manager_nothing_is_sent() -> None:
    notifier = ServiceNotifier.from_environ({})
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False


def test_a_message_is_one_datagram_of_lines(notify_socket: socket.socket) -> None:
    notifier = ServiceNotifier.from_environ({"NOTIFY_SOCKET": notify_socket.getsockname()})
    notifier.ready("journal open")
    assert received(notify_socket) == ["READY=1", "STATUS=journal open"]


def test_the_watchdog_pings_at_half_its_timeout_and_only_for_our_pid() -> None:
    ours = ServiceNotifier.from_environ(
        {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert ours.watchdog_interval_s == 5.0
    a_child_of_ours = ServiceNotifier.from_environ(
        {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}
    )
    assert a_child_of_ours.watchdog_interval_s is None


def test_a_vanished_service_manager_is_counted_not_fatal(tmp_path: Path) -> None:
    notifier = ServiceNotifier(str(tmp_path / "gone.sock"))
    assert notifier.notify("WATCHDOG=1") is False
    assert notifier.failed == 1


def test_fieldgate_run_notifies_ready_pings_the_watchdog_and_says_stopping(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "var"}"\n[mqtt]\nenabled = false\n[metrics]\nenabled = false\n'
    )
    env = {
        **os.environ,
        "NOTIFY_SOCKET": notify_socket.getsockname(),
        "WATCHDOG_USEC": "400000",  # a ping every 0.2 s
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        first = received(notify_socket)
        assert first[0] == "READY=1", first
        assert (tmp_path / "var" / "journal.db").exists(), "ready only once the journal is open"
        started = time.monotonic()
        pings = [received(notify_socket) for _ in range(3)]
        assert all(p == ["WATCHDOG=1"] for p in pings)
        assert time.monotonic() - started < 5
        proc.send_signal(signal.SIGTERM)
        while (message := received(notify_socket)) == ["WATCHDOG=1"]:
            pass
        assert message[0] == "STOPPING=1"
        assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
