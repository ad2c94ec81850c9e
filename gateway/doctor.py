"""``fieldgate doctor``: check a site's installation and say what to fix.

Each check looks at one thing the gateway needs (its config, data directory, disk, journal,
ports, broker, serial devices, BLE controller, clock) and returns a :class:`Finding`: ``ok``,
``warn`` (works, but look at it) or ``fail`` (the gateway will not work as configured), with
the fix in words an operator can act on. The command exits non-zero when anything fails.

Checks only read: nothing here writes the journal or changes the system (the journal is
opened read-only), so doctor is safe to run beside a running gateway.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.config import GatewayConfig, load_config
from gateway.errors import ConfigError
from gateway.sources.mqtt_tls import client_context
from gateway.store.recovery import journal_problem

Status = Literal["ok", "warn", "fail"]
# The clock is wrong for sure before this instant (no release of fieldgate is older): a
# board without a battery-backed RTC boots in 1970 until NTP answers.
_EARLIEST_SANE_TIME = 1_735_689_600  # 2025-01-01T00:00:00Z
_MIN_FREE_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    fix: str = ""


def _ok(check: str, message: str) -> Finding:
    return Finding(check, "ok", message)


def check_config(path: Path | None) -> tuple[Finding, GatewayConfig | None]:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return Finding(
            "config",
            "fail",
            str(exc),
            f"fix `{exc.key}` (every key: docs/configuration.md); "
            "`fieldgate run --check` validates",
        ), None
    where = str(path) if path else "built-in defaults and FIELDGATE_* variables"
    return _ok("config", f"valid ({where})"), cfg


def check_data_dir(cfg: GatewayConfig) -> Finding:
    data = cfg.data_dir
    if not data.is_absolute():
        return Finding(
            "data_dir",
            "warn",
            f"{data} is relative: it depends on the directory the gateway starts in",
            "set data_dir to an absolute path, e.g. /var/lib/fieldgate",
        )
    existing = next((p for p in (data, *data.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        return Finding(
            "data_dir",
            "fail",
            f"{data} cannot be created: {existing} is not a directory",
            "point data_dir at a directory (or a path under one)",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        return Finding(
            "data_dir",
            "fail",
            f"{existing} is not writable by this user",
            f"chown the directory to the gateway's user (deploy/install.sh uses {data})",
        )
    return _ok("data_dir", f"{data} is writable" if data.exists() else f"{data} can be created")


def check_disk(cfg: GatewayConfig) -> Finding:
    existing = next((p for p in (cfg.data_dir, *cfg.data_dir.parents) if p.exists()), Path("/"))
    usage = shutil.disk_usage(existing)
    free_mb = usage.free / 1e6
    budget = cfg.journal.raw_budget_bytes
    journal = cfg.journal_path.stat().st_size if cfg.journal_path.exists() else 0
    if usage.free < _MIN_FREE_BYTES:
        return Finding(
            "disk",
            "fail",
            f"{free_mb:.0f} MB free on {existing}: commits will fail soon",
            "free space or move data_dir to a larger disk",
        )
    if usage.free + journal < budget:
        return Finding(
            "disk",
            "warn",
            f"{free_mb:.0f} MB free, but the journal may grow to "
            f"journal.raw_budget_bytes = {budget / 1e6:.0f} MB",
            "lower journal.raw_budget_bytes below the free space",
        )
    return _ok("disk", f"{free_mb:.0f} MB free on {existing}")


def check_journal(cfg: GatewayConfig) -> Finding:
    path = cfg.journal_path
    if not path.exists():
        return _ok("journal", f"{path} does not exist yet (created on first start)")
    problem = journal_problem(path)  # the same check the gateway runs at open (read-only)
    if problem is not None:
        return Finding(
            "journal",
            "fail",
            f"{path}: {problem}",
            "move it aside and restore a backup; `fieldgate journal recover` salvages it",
        )
    return _ok("journal", f"{path} passes quick_check ({path.stat().st_size / 1e6:.1f} MB)")


def check_metrics_port(cfg: GatewayConfig) -> Finding:
    m = cfg.metrics
    if not m.enabled:
        return _ok("metrics port", "metrics disabled")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((m.host, m.port))
        except OSError as exc:
            return Finding(
                "metrics port",
                "fail",
                f"{m.host}:{m.port} cannot be opened: {exc.strerror}",
                "is a gateway already running? otherwise choose another metrics.port",
            )
    return _ok("metrics port", f"{m.host}:{m.port} is free")


def check_broker(cfg: GatewayConfig, timeout_s: float = 3.0) -> Finding:
    if not cfg.mqtt.enabled:
        return _ok("broker", "MQTT disabled")
    host, port = cfg.mqtt.broker
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        return Finding(
            "broker",
            "fail",
            f"{host}:{port} unreachable: {exc.strerror or exc}",
            "start the broker (systemctl start mosquitto) or fix mqtt.url",
        )
    try:
        code = _mqtt_connect_code(cfg, host, port, timeout_s)
    except ssl.SSLError as exc:
        return Finding(
            "broker",
            "fail",
            f"{host}:{port}: TLS failed ({exc.reason or exc})",
            "check mqtt.tls_ca_file is the CA that signed the broker's certificate, and that "
            "the URL's host name is in that certificate",
        )
    if code is None:
        return Finding(
            "broker",
            "fail",
            f"{host}:{port} accepts TCP but did not answer MQTT CONNECT",
            "is this port an MQTT listener? check mqtt.url",
        )
    if code != 0:
        return Finding(
            "broker",
            "fail",
            f"{host}:{port} refused the gateway's credentials ({_CONNACK.get(code, code)})",
            "check mqtt.username / mqtt.password against the broker's password file",
        )
    return _ok("broker", f"{host}:{port} accepts the gateway's credentials")


_CONNACK = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


def _mqtt_connect_code(cfg: GatewayConfig, host: str, port: int, timeout_s: float) -> int | None:
    """The CONNACK return code for the gateway's credentials, or None if none came.

    A raw MQTT 3.1.1 CONNECT with a throw-away client id, so the gateway's own persistent
    session (its client id) is never taken over by the check.
    """
    client_id = f"fieldgate-doctor-{os.getpid()}".encode()
    flags = 0x02  # clean session
    payload = len(client_id).to_bytes(2, "big") + client_id
    if cfg.mqtt.username is not None:
        flags |= 0x80
        user = cfg.mqtt.username.encode()
        payload += len(user).to_bytes(2, "big") + user
        if cfg.mqtt.password is not None:
            flags |= 0x40
            password = cfg.mqtt.password.get_secret_value().encode()
            payload += len(password).to_bytes(2, "big") + password
    variable = b"\x00\x04MQTT\x04" + bytes([flags]) + (10).to_bytes(2, "big")
    body = variable + payload
    packet = b"\x10" + _remaining_length(len(body)) + body
    context = client_context(cfg.mqtt)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            sock = context.wrap_socket(raw, server_hostname=host) if context else raw
            with sock:
                sock.sendall(packet)
                answer = sock.recv(4)
                if len(answer) == 4 and answer[0] == 0x20:
                    sock.sendall(b"\xe0\x00")  # DISCONNECT
                    return answer[3]
    except ssl.SSLError:
        raise
    except OSError:
        return None
    return None


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def check_serial(cfg: GatewayConfig) -> Iterator[Finding]:
    for port in cfg.serial.ports:
        path = Path(port.path)
        name = f"serial {port.path}"
        if not path.exists():
            yield Finding(
                name,
                "fail",
                "no such device (unplugged, or another name after a reboot?)",
                "use a stable /dev/serial/by-id/... path; check the cable",
            )
        elif not stat.S_ISCHR(path.stat().st_mode):
            yield Finding(name, "fail", "is not a character device", "point at the tty device")
        elif not os.access(path, os.R_OK | os.W_OK):
            yield Finding(
                name,
                "fail",
                "not readable and writable by this user",
                "add the gateway's user to the device's group (usually dialout)",
            )
        else:
            yield _ok(name, "present and accessible")


def check_ble(cfg: GatewayConfig, timeout_s: float = 3.0) -> Finding:
    if not cfg.ble.enabled:
        return _ok("ble", "BLE disabled")
    transport = cfg.ble.transport
    kind, _, rest = transport.partition(":")
    if kind == "bluez":
        adapter = Path("/sys/class/bluetooth") / rest
        if not adapter.exists():
            return Finding(
                "ble",
                "fail",
                f"no Bluetooth adapter {rest} (nothing in /sys/class/bluetooth)",
                "check `bluetoothctl list`; or use a USB dongle with ble.transport = usb:0",
            )
        return _ok("ble", f"BlueZ adapter {rest} present")
    if kind == "tcp-client":
        host, _, port = rest.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
        except (OSError, ValueError) as exc:
            return Finding(
                "ble",
                "fail",
                f"HCI controller at {rest} unreachable: {exc}",
                "start the controller process or fix ble.transport",
            )
        return _ok("ble", f"HCI controller at {rest} reachable")
    if kind == "usb":
        usb = Path("/dev/bus/usb")
        if not usb.is_dir() or not any(usb.iterdir()):
            return Finding(
                "ble",
                "fail",
                "no USB bus visible: the HCI dongle cannot be opened",
                "plug in the dongle; in a container pass /dev/bus/usb through",
            )
        return Finding(
            "ble",
            "warn",
            f"{transport}: USB bus present; the dongle itself is checked when the gateway starts",
            "",
        )
    return Finding("ble", "warn", f"cannot check transport {transport!r} from here", "")


def check_clock(now: Callable[[], float] = time.time) -> Finding:
    current = now()
    if current < _EARLIEST_SANE_TIME:
        shown = time.strftime("%Y-%m-%d %H:%M", time.gmtime(current))
        return Finding(
            "clock",
            "fail",
            f"system clock reads {shown} UTC, before any fieldgate release",
            "enable NTP (timedatectl set-ntp true) or fit a battery-backed RTC",
        )
    if Path("/run/systemd/timesync/synchronized").exists():
        return _ok("clock", "synchronised by systemd-timesyncd")
    return Finding(
        "clock",
        "warn",
        "plausible, but synchronisation cannot be confirmed here",
        "make sure NTP runs (timedatectl status)",
    )


def run_checks(config_path: Path | None) -> list[Finding]:
    first, cfg = check_config(config_path)
    findings = [first]
    if cfg is None:
        return findings
    findings += [
        check_data_dir(cfg),
        check_disk(cfg),
        check_journal(cfg),
        check_metrics_port(cfg),
        check_broker(cfg),
        *check_serial(cfg),
        check_ble(cfg),
        check_clock(),
    ]
    return findings
