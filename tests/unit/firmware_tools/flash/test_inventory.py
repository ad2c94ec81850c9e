"""Fleet inventory TOML and ``--to`` node specs: what parses, and what each mistake says."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_tools.flash.inventory import (
    FleetDefaults,
    NodeEntry,
    Transport,
    check_unique,
    load_inventory,
    parse_inventory,
    parse_node_spec,
)
from gateway.errors import ConfigError

FLEET = """
[defaults]
pubkey = "keys/model-signing.pub"
parallel = 8
retries = 5
ble_hci = "usb:0"

[[node]]
id = "pump-01"
transport = "serial"
address = "/dev/ttyACM0"
target = "cortex-m4-256k"

[[node]]
id = "pump-02"
transport = "mqtt"
address = "mqtt://10.0.0.5"
site = "site1"

[[node]]
id = "pump-03"
transport = "smp-ble"
address = "F0:12:34:56:78:9A"

[[node]]
id = "pump-04"
transport = "smp-serial"
address = "/dev/ttyACM1"
"""


def test_inventory_lists_nodes_with_transport_address_and_target(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET)
    inv = load_inventory(path)
    assert inv.defaults == FleetDefaults(
        pubkey=tmp_path / "keys/model-signing.pub", parallel=8, retries=5, ble_hci="usb:0"
    )
    assert [(n.node_id, n.transport, n.address, n.site, n.target) for n in inv.nodes] == [
        ("pump-01", Transport.SERIAL, "/dev/ttyACM0", None, "cortex-m4-256k"),
        ("pump-02", Transport.MQTT, "mqtt://10.0.0.5:1883", "site1", None),
        ("pump-03", Transport.SMP_BLE, "F0:12:34:56:78:9A", None, None),
        ("pump-04", Transport.SMP_SERIAL, "/dev/ttyACM1", None, None),
    ]
    assert inv.find("pump-03") is inv.nodes[2]
    assert inv.nodes[1].origin == f"{path}: node[2] (pump-02)"


def test_defaults_section_is_optional() -> None:
    inv = parse_inventory(
        '[[node]]\nid = "a"\ntransport = "serial"\naddress = "/dev/ttyUSB0"\n', Path("f.toml")
    )
    assert inv.defaults == FleetDefaults()


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        (
            '[[node]]\nid = "p1"\ntransport = "zigbee"\naddress = "x"\n',
            "f.toml: node[1] (p1).transport",
            "unknown transport 'zigbee'",
        ),
        ('[[node]]\nid = "p1"\ntransport = "serial"\n', "f.toml: node[1] (p1).address", "missing"),
        (
            '[[node]]\nid = "p1"\ntransport = "mqtt"\naddress = "mqtt://h:1883"\n',
            "f.toml: node[1] (p1).site",
            "MQTT nodes need the site",
        ),
        (
            '[[node]]\nid = "p1"\ntransport = "mqtt"\naddress = "tcp://h"\nsite = "s"\n',
            "f.toml: node[1] (p1).address",
            "not a broker URL",
        ),
        (
            '[[node]]\nid = "p1"\ntransport = "serial"\naddress = "/dev/x"\nsite = "s"\n',
            "f.toml: node[1] (p1).site",
            "only MQTT nodes have a site",
        ),
        (
            '[[node]]\nid = "p1"\ntransport = "serial"\naddress = "/dev/x"\ntarget = "z80"\n',
            "f.toml: node[1] (p1).target",
            "unknown target class 'z80'",
        ),
        (
            '[[node]]\nid = "p1"\ntransport = "serial"\naddress = "/dev/x"\nbaud = 9600\n',
            "f.toml: node[1] (p1).baud",
            "unknown key",
        ),
        (
            '[[node]]\nid = "p 1"\ntransport = "serial"\naddress = "/dev/x"\n',
            "f.toml: node[1] (p 1).id",
            "must be 1-64 characters",
        ),
        ('[[node]]\ntransport = "serial"\naddress = "/dev/x"\n', "f.toml: node[1].id", "missing"),
        ("[defaults]\nparallel = 0\n", "f.toml: defaults.parallel", "integer >= 1"),
        ('[defaults]\nretries = "3"\n', "f.toml: defaults.retries", "integer >= 0"),
        ("[defaults]\nretries = 1\n", "f.toml: node", "at least one [[node]]"),
        ("[[node]\n", "f.toml", "not valid TOML"),
        ("[nodes]\n", "f.toml.nodes", "unknown key"),
    ],
)
def test_inventory_errors_name_file_entry_and_key(body: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_inventory(body, Path("f.toml"))
    assert err.value.key == key
    assert reason in err.value.reason


def test_two_entries_with_one_node_id_are_refused() -> None:
    body = (
        '[[node]]\nid = "p1"\ntransport = "serial"\naddress = "/dev/a"\n'
        '[[node]]\nid = "p1"\ntransport = "serial"\naddress = "/dev/b"\n'
    )
    with pytest.raises(ConfigError) as err:
        parse_inventory(body, Path("f.toml"))
    assert err.value.key == "f.toml: node[2] (p1)"
    assert "already used by f.toml: node[1] (p1)" in err.value.reason


def test_two_nodes_on_one_port_are_refused_but_mqtt_nodes_share_a_broker() -> None:
    body = (
        '[[node]]\nid = "p1"\ntransport = "serial"\naddress = "/dev/a"\n'
        '[[node]]\nid = "p2"\ntransport = "serial"\naddress = "/dev/a"\n'
    )
    with pytest.raises(ConfigError, match="one port or BLE address reaches one node"):
        parse_inventory(body, Path("f.toml"))
    ok = parse_inventory(
        '[[node]]\nid = "p1"\ntransport = "mqtt"\naddress = "mqtt://b"\nsite = "s"\n'
        '[[node]]\nid = "p2"\ntransport = "mqtt"\naddress = "mqtt://b"\nsite = "s"\n',
        Path("f.toml"),
    )
    assert len(ok.nodes) == 2


def test_unreadable_inventory_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_inventory(tmp_path / "missing.toml")
    assert err.value.key == str(tmp_path / "missing.toml")
    assert "cannot read" in err.value.reason


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "serial:/dev/ttyACM0=pump-01",
            NodeEntry("pump-01", Transport.SERIAL, "/dev/ttyACM0"),
        ),
        ("serial:/dev/ttyACM0", NodeEntry("ttyACM0", Transport.SERIAL, "/dev/ttyACM0")),
        (
            "smp-serial:/dev/pts/7=pump-04",
            NodeEntry("pump-04", Transport.SMP_SERIAL, "/dev/pts/7"),
        ),
        ("smp-ble:pump-03", NodeEntry("pump-03", Transport.SMP_BLE, "pump-03")),
        (
            "smp-ble:F0:12:34:56:78:9A=pump-05",
            NodeEntry("pump-05", Transport.SMP_BLE, "F0:12:34:56:78:9A"),
        ),
        (
            "mqtt://127.0.0.1:1883/site1/pump-02",
            NodeEntry("pump-02", Transport.MQTT, "mqtt://127.0.0.1:1883", site="site1"),
        ),
        (
            "mqtt://broker.local/site1/pump-02",
            NodeEntry("pump-02", Transport.MQTT, "mqtt://broker.local:1883", site="site1"),
        ),
    ],
)
def test_node_specs_parse_transport_address_and_id(spec: str, expected: NodeEntry) -> None:
    entry = parse_node_spec(spec)
    assert (entry.node_id, entry.transport, entry.address, entry.site) == (
        expected.node_id,
        expected.transport,
        expected.address,
        expected.site,
    )
    assert entry.origin == f"--to {spec}"


def test_a_node_spec_describes_itself_back() -> None:
    for spec in ("serial:/dev/ttyACM0", "smp-ble:pump-03", "mqtt://h:1884/s1/pump-02"):
        assert parse_node_spec(spec).describe() == spec


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("/dev/ttyACM0", "expected TRANSPORT:ADDRESS[=ID]"),
        ("usb:/dev/ttyACM0", "unknown transport 'usb'"),
        ("serial:=pump-01", "address before '=' is empty"),
        ("serial:/dev/x=bad id", "must be 1-64 characters"),
        ("mqtt:broker/site/node", "write MQTT nodes as mqtt://"),
        ("mqtt://broker/site", "expected mqtt://HOST[:PORT]/SITE/NODE"),
        ("mqtt://broker:99999/s/n", "bad port"),
    ],
)
def test_bad_node_specs_say_the_expected_syntax(spec: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_node_spec(spec)
    assert err.value.key == f"node spec {spec!r}"
    assert reason in err.value.reason


def test_two_specs_for_one_node_id_are_refused() -> None:
    nodes = [parse_node_spec("serial:/dev/a=p1"), parse_node_spec("smp-ble:p1")]
    with pytest.raises(ConfigError, match="already used by --to serial:/dev/a=p1"):
        check_unique(nodes)
