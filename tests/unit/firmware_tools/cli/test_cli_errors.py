"""`flash-model flash/info/rollback`: mistakes caught before anything is sent, exit status 1.

Driven through the real Typer app; nothing here needs a node.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from firmware_tools.cli import app
from firmware_tools.signing import generate_keypair, load_private_key, write_signed
from tests.unit.firmware_tools.flash.conftest import signed_model

runner = CliRunner()


@pytest.fixture
def signed_file(tmp_path: Path) -> tuple[Path, Path]:
    """A model signed with a fresh key pair: (model path, public key path)."""
    priv, pub = generate_keypair(tmp_path / "keys")
    artifact, signed = signed_model(key=load_private_key(priv))
    path = tmp_path / "pump.tflite"
    path.write_bytes(artifact)
    write_signed(signed, path)
    return path, pub


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_flash_without_nodes_says_how_to_name_them(signed_file: tuple[Path, Path]) -> None:
    code, out = run("flash", str(signed_file[0]))
    assert code == 1
    assert "name the nodes with --to NODE... or --fleet inventory.toml" in out


def test_flash_with_a_bad_node_spec_shows_the_syntax(signed_file: tuple[Path, Path]) -> None:
    code, out = run("flash", str(signed_file[0]), "--to", "ttyACM0")
    assert code == 1
    assert "node spec 'ttyACM0'" in out
    assert "TRANSPORT:ADDRESS[=ID]" in out


def test_flash_refuses_an_unsigned_model(tmp_path: Path) -> None:
    artifact, _ = signed_model()
    path = tmp_path / "raw.tflite"
    path.write_bytes(artifact)
    code, out = run("flash", str(path), "--to", "serial:/dev/null=p1")
    assert code == 1
    assert "no signed manifest next to" in out
    assert "flash-model sign" in out


def test_flash_refuses_a_model_altered_after_signing(signed_file: tuple[Path, Path]) -> None:
    path, pub = signed_file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    code, out = run("flash", str(path), "--to", "serial:/dev/null=p1", "--pubkey", str(pub))
    assert code == 1
    assert "verification failed (sha256)" in out
    # Without the key the size/hash check still catches it before any node sees it.
    code, out = run("flash", str(path), "--to", "serial:/dev/null=p1")
    assert code == 1
    assert "every node would refuse it" in out


def test_flash_refuses_a_model_signed_by_another_key(
    signed_file: tuple[Path, Path], tmp_path: Path
) -> None:
    path, _ = signed_file
    _, signed = signed_model(key=Ed25519PrivateKey.generate())
    write_signed(signed, path)
    _, other_pub = generate_keypair(tmp_path / "other")
    code, out = run("flash", str(path), "--to", "serial:/dev/null=p1", "--pubkey", str(other_pub))
    assert code == 1
    assert "verification failed (key)" in out


def test_flash_names_the_inventory_entry_at_fault(
    signed_file: tuple[Path, Path], tmp_path: Path
) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[node]]\nid = "pump-01"\ntransport = "serial"\n')
    code, out = run("flash", str(signed_file[0]), "--fleet", str(fleet))
    assert code == 1
    assert f"{fleet}: node[1] (pump-01).address: missing" in out


def test_a_plain_id_with_fleet_must_be_in_the_inventory(
    signed_file: tuple[Path, Path], tmp_path: Path
) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[node]]\nid = "pump-01"\ntransport = "serial"\naddress = "/dev/a"\n')
    code, out = run("flash", str(signed_file[0]), "--fleet", str(fleet), "--to", "pump-09")
    assert code == 1
    assert "no node 'pump-09'" in out
    assert "its nodes are pump-01" in out


def test_smp_ble_without_a_controller_says_how_to_give_one(
    signed_file: tuple[Path, Path],
) -> None:
    code, out = run("flash", str(signed_file[0]), "--to", "smp-ble:pump-03")
    assert code == 1
    assert "--ble-hci" in out


def test_info_and_rollback_take_the_same_node_specs() -> None:
    code, out = run("info", "nowhere")
    assert code == 1
    assert "TRANSPORT:ADDRESS[=ID]" in out
    code, out = run("rollback", "zigbee:1")
    assert code == 1
    assert "unknown transport 'zigbee'" in out


def test_help_explains_specs_inventory_dry_run_and_exit_status() -> None:
    code, out = run("flash", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for phrase in ("mqtt://HOST[:PORT]/SITE/ID", "--fleet", "--dry-run", "Exit status", "resume"):
        assert phrase in flat
