"""Which nodes to flash, and how to reach them: the fleet inventory and ``--to`` node specs.

A fleet inventory is a TOML file (``flash-model flash MODEL --fleet inventory.toml``)::

    [defaults]
    pubkey = "keys/model-signing.pub"  # relative to this file
    parallel = 4
    retries = 3

    [[node]]
    id = "pump-01"
    transport = "serial"              # serial | smp-serial | smp-ble | mqtt
    address = "/dev/ttyACM0"          # serial: port; smp-ble: BLE name or address
    target = "cortex-m4-256k"         # optional: checked against what the node reports

    [[node]]
    id = "pump-02"
    transport = "mqtt"
    address = "mqtt://10.0.0.5:1883"  # the site broker
    site = "site1"

A node spec (``--to``, and the NODE argument of ``info`` / ``rollback``) names one node on
the command line::

    serial:/dev/ttyACM0=pump-01        TRANSPORT:ADDRESS[=ID]
    smp-serial:/dev/ttyACM1=pump-04    (ID defaults to the port's file name, e.g. ttyACM1)
    smp-ble:pump-03                    (ID defaults to the BLE name or address)
    smp-ble:F0:12:34:56:78:9A=pump-05
    mqtt://127.0.0.1:1883/site1/pump-02   broker URL, then site and node id as path

Every error is a :class:`~gateway.errors.ConfigError` whose key names the file, the entry and
the key (``inventory.toml: node[2] (pump-02).transport``) or the spec given.
"""

from __future__ import annotations

import enum
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from firmware_tools.flash.mcumgr.options import KEYS as MCUMGR_KEYS
from firmware_tools.flash.mcumgr.options import McuMgrOptions, parse_options
from gateway.errors import ConfigError
from gateway.protocol.manifest import TARGET_CLASSES

_NODE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SITE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DEFAULT_MQTT_PORT = 1883


class Transport(enum.StrEnum):
    SERIAL = "serial"  # our binary chunked transfer on the node's serial port
    SMP_SERIAL = "smp-serial"  # SMP (MCUmgr) on the node's management serial port
    SMP_BLE = "smp-ble"  # SMP over the node's BLE SMP GATT service
    MQTT = "mqtt"  # our chunked transfer through the site broker


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One node to reach: its id, transport and address (``site`` for MQTT only)."""

    node_id: str
    transport: Transport
    address: str  # serial port path, BLE name/address, or broker URL mqtt://host:port
    site: str | None = None
    target: str | None = None  # expected target class; None = accept what the node reports
    origin: str = ""  # where it was declared, for messages: "fleet.toml: node[2]", "--to ..."
    # issue 15: smp-serial nodes' MCUmgr settings (smp_kind, model_dir, fs_activate, ...)
    mcumgr: McuMgrOptions = field(default_factory=McuMgrOptions)

    def describe(self) -> str:
        """The address as a person would write it (a node spec)."""
        if self.transport is Transport.MQTT:
            return f"{self.address}/{self.site}/{self.node_id}"
        return f"{self.transport.value}:{self.address}"


@dataclass(frozen=True, slots=True)
class FleetDefaults:
    """The ``[defaults]`` table. Command-line options override each value."""

    pubkey: Path | None = None
    parallel: int = 4
    retries: int = 3
    baud: int = 115_200
    ble_hci: str | None = None  # Bumble HCI transport for smp-ble, e.g. "usb:0"
    activate_timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Inventory:
    defaults: FleetDefaults = field(default_factory=FleetDefaults)
    nodes: tuple[NodeEntry, ...] = ()

    def find(self, node_id: str) -> NodeEntry | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)


# -- node specs -----------------------------------------------------------------------------


def parse_node_spec(spec: str) -> NodeEntry:
    """Parse one ``--to`` node spec (see the module docstring for the syntax)."""
    key = f"node spec {spec!r}"
    text = spec.strip()
    if text.startswith("mqtt://"):
        return _parse_mqtt_spec(text, key)
    transport_text, sep, rest = text.partition(":")
    if not sep or not rest:
        raise ConfigError(
            key,
            "expected TRANSPORT:ADDRESS[=ID] (e.g. serial:/dev/ttyACM0=pump-01, smp-ble:pump-03) "
            "or mqtt://HOST[:PORT]/SITE/NODE",
        )
    transport = _transport(transport_text, key)
    if transport is Transport.MQTT:
        raise ConfigError(key, "write MQTT nodes as mqtt://HOST[:PORT]/SITE/NODE")
    address, _, node_id = rest.rpartition("=") if "=" in rest else (rest, "", "")
    if not address:
        raise ConfigError(key, "the address before '=' is empty")
    if not node_id:
        node_id = Path(address).name if transport is not Transport.SMP_BLE else address
    _check_node_id(node_id, key)
    return NodeEntry(node_id, transport, address, origin=f"--to {spec}")


def _parse_mqtt_spec(text: str, key: str) -> NodeEntry:
    parts = urlsplit(text)
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) != 2 or not parts.hostname:
        raise ConfigError(
            key, "expected mqtt://HOST[:PORT]/SITE/NODE, e.g. mqtt://gw:1883/site1/pump-02"
        )
    try:
        port = parts.port or DEFAULT_MQTT_PORT
    except ValueError as exc:
        raise ConfigError(key, f"bad port: {exc}") from exc
    site, node_id = segments
    _check_site(site, key)
    _check_node_id(node_id, key)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return NodeEntry(
        node_id, Transport.MQTT, f"mqtt://{host}:{port}", site=site, origin=f"--to {text}"
    )


# -- inventory files ------------------------------------------------------------------------


def load_inventory(path: Path) -> Inventory:
    """Read and validate a fleet inventory TOML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the inventory: {exc}") from exc
    return parse_inventory(text, path)


def parse_inventory(text: str, path: Path) -> Inventory:
    """Validate inventory TOML ``text``; ``path`` names it in errors and anchors relative paths."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    _no_unknown_keys(doc, {"defaults", "node"}, str(path))
    defaults = _parse_defaults(doc.get("defaults", {}), path)
    raw_nodes = doc.get("node", [])
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ConfigError(
            f"{path}: node", "declare at least one [[node]] table with id, transport and address"
        )
    nodes = tuple(_parse_node(raw, path, i) for i, raw in enumerate(raw_nodes, start=1))
    check_unique(nodes)
    return Inventory(defaults, nodes)


def check_unique(nodes: tuple[NodeEntry, ...] | list[NodeEntry]) -> None:
    """Refuse two entries with one node id, or two nodes behind one port or BLE address."""
    seen_ids: dict[str, NodeEntry] = {}
    seen_addr: dict[tuple[Transport, str], NodeEntry] = {}
    for node in nodes:
        if node.node_id in seen_ids:
            raise ConfigError(
                node.origin,
                f"node id {node.node_id!r} is already used by {seen_ids[node.node_id].origin}; "
                "give each node its own id",
            )
        seen_ids[node.node_id] = node
        if node.transport is Transport.MQTT:
            continue  # many nodes share one broker
        addr = (node.transport, node.address)
        if addr in seen_addr:
            raise ConfigError(
                node.origin,
                f"{node.describe()} is also {seen_addr[addr].origin}; one port or BLE address "
                "reaches one node",
            )
        seen_addr[addr] = node


def _parse_defaults(raw: Any, path: Path) -> FleetDefaults:
    key = f"{path}: defaults"
    if not isinstance(raw, dict):
        raise ConfigError(key, "must be a table: [defaults]")
    _no_unknown_keys(
        raw, {"pubkey", "parallel", "retries", "baud", "ble_hci", "activate_timeout_s"}, key
    )
    pubkey = raw.get("pubkey")
    if pubkey is not None:
        pubkey = path.parent / _str(raw, "pubkey", key)
    return FleetDefaults(
        pubkey=pubkey,
        parallel=_int(raw, "parallel", key, 4, minimum=1),
        retries=_int(raw, "retries", key, 3, minimum=0),
        baud=_int(raw, "baud", key, 115_200, minimum=300),
        ble_hci=_str(raw, "ble_hci", key) if "ble_hci" in raw else None,
        activate_timeout_s=_float(raw, "activate_timeout_s", key, 60.0),
    )


def _parse_node(raw: Any, path: Path, index: int) -> NodeEntry:
    where = f"{path}: node[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(where, "must be a table: [[node]]")
    if isinstance(raw.get("id"), str):
        where = f"{where} ({raw['id']})"
    _no_unknown_keys(raw, {"id", "transport", "address", "site", "target"} | MCUMGR_KEYS, where)
    node_id = _str(raw, "id", where)
    _check_node_id(node_id, f"{where}.id")
    transport = _transport(_str(raw, "transport", where), f"{where}.transport")
    address = _str(raw, "address", where)
    site = _str(raw, "site", where) if "site" in raw else None
    if transport is Transport.MQTT:
        address = _broker_url(address, f"{where}.address")
        if site is None:
            raise ConfigError(f"{where}.site", "MQTT nodes need the site their topics use")
        _check_site(site, f"{where}.site")
    elif site is not None:
        raise ConfigError(f"{where}.site", f"only MQTT nodes have a site, not {transport.value}")
    target = _str(raw, "target", where) if "target" in raw else None
    if target is not None and target not in TARGET_CLASSES:
        raise ConfigError(
            f"{where}.target",
            f"unknown target class {target!r}; choose one of {', '.join(sorted(TARGET_CLASSES))}",
        )
    # issue 15: per-node MCUmgr settings, for smp-serial nodes only
    mcumgr_raw = {k: v for k, v in raw.items() if k in MCUMGR_KEYS}
    if mcumgr_raw and transport is not Transport.SMP_SERIAL:
        raise ConfigError(f"{where}.{sorted(mcumgr_raw)[0]}", "only smp-serial nodes take this key")
    mcumgr = parse_options(mcumgr_raw, where, path.parent)
    return NodeEntry(
        node_id, transport, address, site=site, target=target, origin=where, mcumgr=mcumgr
    )


def _broker_url(text: str, key: str) -> str:
    parts = urlsplit(text)
    if parts.scheme != "mqtt" or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(key, f"{text!r} is not a broker URL like mqtt://10.0.0.5:1883")
    try:
        port = parts.port or DEFAULT_MQTT_PORT
    except ValueError as exc:
        raise ConfigError(key, f"bad port in {text!r}: {exc}") from exc
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"mqtt://{host}:{port}"


# -- small validators -----------------------------------------------------------------------


def _transport(text: str, key: str) -> Transport:
    try:
        return Transport(text)
    except ValueError:
        raise ConfigError(
            key,
            f"unknown transport {text!r}; choose one of {', '.join(t.value for t in Transport)}",
        ) from None


def _check_node_id(node_id: str, key: str) -> None:
    if not _NODE_ID.match(node_id):
        raise ConfigError(key, f"node id {node_id!r} must be 1-64 characters of [A-Za-z0-9._-]")


def _check_site(site: str, key: str) -> None:
    if not _SITE.match(site):
        raise ConfigError(key, f"site {site!r} must be 1-64 characters of [A-Za-z0-9._-]")


def _no_unknown_keys(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}", f"unknown key; allowed here: {', '.join(sorted(allowed))}"
        )


def _str(raw: dict[str, Any], name: str, where: str) -> str:
    if name not in raw:
        raise ConfigError(f"{where}.{name}", "missing")
    value = raw[name]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{name}", f"must be a non-empty string, not {value!r}")
    return value


def _int(raw: dict[str, Any], name: str, where: str, default: int, *, minimum: int) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}.{name}", f"must be an integer >= {minimum}, not {value!r}")
    return value


def _float(raw: dict[str, Any], name: str, where: str, default: float) -> float:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}.{name}", f"must be a number > 0, not {value!r}")
    return float(value)
