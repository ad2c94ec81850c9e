"""Flash jobs from the dashboard (issue 13): a real gateway flashes a real simulated node.

The node is the simulator's MQTT node with A/B model slots behind a real mosquitto; the
gateway ingests its data through that broker and its flash job reaches it there, through
firmware_tools' orchestration (pre-flight, upload, test boot, self-test, confirm). The
model is the shipped node model signed with a throw-away fleet key; the node checks the
signature itself.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.dashboard import (
    Dashboard,
    FlashKit,
    csrf_of,
    flash_kit,
    login,
    running_dashboard,
)
from tests.fixtures.servers import Mosquitto

pytestmark = pytest.mark.timeout(120)
NODE = "pump-01"
GHOST = "pump-09"  # in the fleet inventory, never powered: nothing answers on its topics


def _kit(tmp_path: Path, mosquitto: Mosquitto, mqtt_prefix: str) -> FlashKit:
    return flash_kit(tmp_path, mosquitto.url, mqtt_prefix)


def _bearer(dash: Dashboard, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {dash.tokens[name]}"}


def _active(dash: Dashboard) -> tuple[str, bool] | None:
    """What the simulated node itself runs: (version, confirmed) of its active slot."""
    assert dash.sim is not None
    for slot in dash.sim.xfer_nodes[NODE].store.info():
        if slot.active:
            return slot.model_version, slot.confirmed
    return None


async def _heard(client: httpx.AsyncClient, node: str) -> None:
    while (await client.get(f"/api/nodes/{node}")).status_code != 200:
        await asyncio.sleep(0.1)  # the node's first message over the broker


async def _finished(client: httpx.AsyncClient, job_id: int) -> dict[str, Any]:
    while True:
        job: dict[str, Any] = (await client.get(f"/api/jobs/{job_id}")).json()
        if job["state"] != "running":
            return job
        await asyncio.sleep(0.2)


async def test_an_operator_flashes_a_node_through_the_api_and_sees_each_step(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    kit = _kit(tmp_path, mosquitto, mqtt_prefix)
    async with running_dashboard(tmp_path, nodes=1, flash=kit) as dash:
        async with dash.client(headers=_bearer(dash, "operator")) as op:
            await _heard(op, NODE)
            assert _active(dash) == ("1.1.0", True)
            listed = {m["sha256"]: m for m in (await op.get("/api/models")).json()}
            assert listed[kit.update_sha256]["verified"] == "verified"

            body = {"artifact_sha256": kit.update_sha256, "nodes": [NODE]}
            started = await op.post("/api/jobs", json=body)
            assert started.status_code == 202, started.text
            job = started.json()
            assert (job["kind"], job["state"], job["who"]) == ("flash", "running", "operator")
            assert job["model"] == "pump_ae 1.2.0 (sequence 2)"

            done = await _finished(op, job["job_id"])
        [node] = done["nodes"]
        assert (done["state"], done["ok"], done["error"]) == ("done", True, "")
        assert (node["node_id"], node["transport"]) == (NODE, "mqtt")
        assert node["result"]["outcome"] == "flashed", node
        assert (node["result"]["old_version"], node["result"]["new_version"]) == ("1.1.0", "1.2.0")
        assert node["result"]["bytes_sent"] == kit.update.stat().st_size
        # Not the dashboard's word for it: the node runs and has confirmed the new model,
        assert _active(dash) == ("1.2.0", True)
        # and says so in its next status report, which the node table shows.
        async with dash.client(headers=_bearer(dash, "viewer")) as viewer:
            while not str((await viewer.get(f"/api/nodes/{NODE}")).json()["model"]).startswith(
                "pump_ae 1.2.0 (slot"
            ):
                await asyncio.sleep(0.2)

        # The same model again: the orchestrator's pre-flight sees it is already there.
        async with dash.client(headers=_bearer(dash, "admin")) as admin:
            again = await admin.post("/api/jobs", json=body)
            assert again.status_code == 202, again.text
            second = await _finished(admin, again.json()["job_id"])
        assert second["nodes"][0]["result"]["outcome"] == "already_current"
        assert second["ok"] is True


async def test_viewers_cannot_start_jobs_and_bad_requests_are_refused_with_the_reason(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    kit = _kit(tmp_path, mosquitto, mqtt_prefix)
    async with running_dashboard(tmp_path, nodes=1, flash=kit) as dash:
        async with dash.client(headers=_bearer(dash, "viewer")) as viewer:
            await _heard(viewer, NODE)
            body = {"artifact_sha256": kit.update_sha256, "nodes": [NODE]}
            assert (await viewer.post("/api/jobs", json=body)).status_code == 403
            assert (
                await viewer.post("/api/jobs/rollback", json={"nodes": [NODE]})
            ).status_code == 403
            assert (await viewer.get("/api/jobs")).json() == []
            models_page = (await viewer.get("/models")).text  # no forms to act with
            assert "Start flash job" not in models_page
            assert "Roll back" not in models_page
        async with dash.client(headers=_bearer(dash, "operator")) as op:
            unknown = await op.post("/api/jobs", json={**body, "nodes": ["pump-77"]})
            assert unknown.status_code == 404
            assert "pump-77" in unknown.json()["detail"]
            not_held = await op.post("/api/jobs", json={**body, "artifact_sha256": "0" * 64})
            assert not_held.status_code == 404
            assert "no signed model artifact" in not_held.json()["detail"]
            # A tampered artifact (one byte more than was signed) is never sent.
            with kit.update.open("ab") as f:
                f.write(b"\0")
            tampered = hashlib.sha256(kit.update.read_bytes()).hexdigest()
            refused = await op.post("/api/jobs", json={**body, "artifact_sha256": tampered})
            assert refused.status_code == 409
            assert "will not send this model" in refused.json()["detail"]
            assert (await op.get("/api/jobs")).json() == []  # nothing was started
        assert _active(dash) == ("1.1.0", True)


async def test_one_job_at_a_time_an_unreachable_node_fails_with_advice_and_jobs_survive_a_restart(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    kit = _kit(tmp_path, mosquitto, mqtt_prefix)
    # The inventory lists a node that is not there, and no retries: its job takes one timeout.
    (tmp_path / "var" / "models" / "fleet.toml").write_text(
        "[defaults]\nretries = 0\n\n"
        f'[[node]]\nid = "{GHOST}"\ntransport = "mqtt"\naddress = "{kit.broker_url}"\n'
        f'site = "{kit.site}"\n'
    )
    async with running_dashboard(tmp_path, nodes=1, flash=kit) as dash:
        async with dash.client(headers=_bearer(dash, "operator")) as op:
            await _heard(op, NODE)
            ghost = await op.post(
                "/api/jobs", json={"artifact_sha256": kit.update_sha256, "nodes": [GHOST]}
            )
            assert ghost.status_code == 202, ghost.text
            busy = await op.post("/api/jobs/rollback", json={"nodes": [NODE]})
            assert busy.status_code == 409
            assert f"job {ghost.json()['job_id']} is still running" in busy.json()["detail"]
            failed = await _finished(op, ghost.json()["job_id"])
        [node] = failed["nodes"]
        assert failed["ok"] is False
        assert node["result"]["outcome"] == "unreachable"
        assert "check that the node is powered and in reach" in node["result"]["reason"]

    # After a restart the finished job is still listed, with its per-node result.
    restarted = running_dashboard(tmp_path, seed=False, site=kit.site)
    async with restarted as dash, dash.client() as client:
        assert (await login(client, "viewer")).status_code == 303
        [kept] = (await client.get("/api/jobs")).json()
        assert kept["job_id"] == failed["job_id"]
        assert kept["nodes"][0]["result"]["outcome"] == "unreachable"
        page = (await client.get("/models")).text
        assert f"Job {kept['job_id']}" in page
        assert "failed on 1 of 1" in page


async def test_with_javascript_off_an_operator_rolls_a_node_back_from_the_models_page(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    kit = _kit(tmp_path, mosquitto, mqtt_prefix)
    async with running_dashboard(tmp_path, nodes=1, flash=kit) as dash:
        async with dash.client() as op:
            await login(op, "operator")
            await _heard(op, NODE)
            page = (await op.get("/models")).text
            assert f'name="nodes" value="{NODE}"' in page  # the node can be flashed from here
            csrf = csrf_of(page)
            form = {"csrf": csrf, "artifact": kit.update_sha256, "nodes": [NODE]}
            started = await op.post("/models/jobs", data=form)
            assert started.status_code == 303
            job_url = started.headers["location"]
            while "flashed" not in (await op.get(job_url)).text:
                await asyncio.sleep(0.2)  # a reload shows the latest state
            assert _active(dash) == ("1.2.0", True)

            # Without the CSRF token the rollback is refused; with it, it goes through.
            refused = await op.post("/models/rollback", data={"node_id": NODE})
            assert refused.status_code == 403
            back = await op.post("/models/rollback", data={"csrf": csrf, "node_id": NODE})
            assert back.status_code == 303
            job_page = ""
            while "reverted" not in job_page:
                job_page = (await op.get(back.headers["location"])).text
                await asyncio.sleep(0.2)
            assert "1.2.0 → 1.1.0" in job_page
        assert _active(dash) == ("1.1.0", True)
