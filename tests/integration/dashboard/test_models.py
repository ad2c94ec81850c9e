"""The Models page and /api/models list the artifacts the gateway holds with their signed
manifests, and say whether each signature verifies with the configured public key."""

from __future__ import annotations

import shutil
from pathlib import Path

from firmware_tools.describe import build_manifest
from firmware_tools.signing import generate_keypair, load_private_key, sign_manifest, write_signed
from tests.fixtures.dashboard import login, running_dashboard

NODE_MODEL = Path(__file__).parents[3] / "tinymodels" / "artifacts" / "node_model.tflite"


async def test_models_show_signed_manifests_and_their_verification(tmp_path: Path) -> None:
    models = tmp_path / "var" / "models"
    models.mkdir(parents=True)
    private, public = generate_keypair(tmp_path / "keys")
    good = models / "pump_ae.tflite"
    shutil.copy(NODE_MODEL, good)
    manifest = build_manifest(
        good.read_bytes(), name="pump_ae", version="1.2.0", sequence=7, arena_bytes=4096
    )
    write_signed(sign_manifest(manifest, load_private_key(private)), good)
    tampered = models / "tampered.tflite"
    tampered.write_bytes(good.read_bytes() + b"\0")  # one byte more than was signed
    write_signed(sign_manifest(manifest, load_private_key(private)), tampered)
    (models / "plain.tflite").write_bytes(good.read_bytes())

    scoring = {"public_key_path": str(public)}
    async with running_dashboard(tmp_path, scoring=scoring) as dash, dash.client() as client:
        await login(client, "viewer")
        listed = {Path(m["path"]).name: m for m in (await client.get("/api/models")).json()}
        page = (await client.get("/models")).text
    assert listed["pump_ae.tflite"]["verified"] == "verified"
    assert listed["pump_ae.tflite"]["sequence"] == 7
    assert listed["pump_ae.tflite"]["version"] == "1.2.0"
    assert listed["tampered.tflite"]["verified"].startswith("FAILED")
    assert listed["plain.tflite"]["signed"] is False
    in_use = [m for m in listed.values() if m["in_use"]]
    assert [m["name"] for m in in_use] == ["gateway_model"]  # the shipped scoring model
    assert "✓ signature verified" in page
    assert "✗ FAILED" in page
