"""flash-model against a stock Zephyr 4.4 SMP server with the fs group (native_sim, a pty).

Nothing of ours runs on the node: stock MCUmgr with littlefs at /lfs1. The CLI runs as the
installed console script; the node reboots (a new process on a new pty behind the same
symlink) when flash-model sends ``os reset``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import pytest
from smp.file_management import FileHashChecksumRequest

from firmware_tools.flash.api import Outcome
from firmware_tools.flash.mcumgr.capabilities import Capabilities, probe
from firmware_tools.flash.mcumgr.flasher import McuMgrFlasher
from firmware_tools.flash.mcumgr.fs_path import FsLayout, FsPath
from firmware_tools.flash.mcumgr.link import McuMgrLink
from firmware_tools.flash.orchestrate import FlashOptions, flash_fleet, report_json
from gateway.protocol.signed_manifest import read_signed
from tests.fixtures.zephyr_smp import NativeSimServer
from tests.integration.firmware_tools.flash.conftest import run_cli
from tests.integration.firmware_tools.flash.zephyr.conftest import KillMidUpload, MakeModel

pytestmark = pytest.mark.usefixtures("_no_leftover_tasks")


async def node_sha256(address: str, path: str) -> bytes:
    """Ask the node itself (fs hash command) what it stores."""
    link = McuMgrLink("probe", address)
    await link.open()
    try:
        reply = await link.request(FileHashChecksumRequest(name=path, type="sha256"), "hash")
        return bytes(reply.body["output"])
    finally:
        await link.close()


async def test_info_reports_the_stock_fs_path_and_no_model(fs_server: NativeSimServer) -> None:
    code, out = await run_cli("info", f"smp-serial:{fs_server.address}=fs-01", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["slots"] == []
    assert doc["path"].startswith("stock fs group (sha256)")
    assert "buf 1024 x 4" in doc["path"]


async def test_flash_uploads_model_and_manifest_verifies_and_second_run_is_current(
    fs_server: NativeSimServer, make_model: MakeModel, tmp_path: Path
) -> None:
    model = make_model(1)
    spec = f"smp-serial:{fs_server.address}=fs-01"
    report = tmp_path / "report.json"
    code, out = await run_cli(
        "flash", str(model.path), "--to", spec, "--pubkey", str(model.pubkey),
        "--report", str(report),
    )  # fmt: skip
    assert code == 0, out
    [row] = json.loads(report.read_text())
    assert row["outcome"] == "flashed"
    assert row["bytes_sent"] == len(model.artifact)
    # The node's own hash of what it stores, and the manifest beside it.
    assert (
        await node_sha256(fs_server.address, "/lfs1/model.tflite")
        == hashlib.sha256(model.artifact).digest()
    )
    manifest = model.path.with_suffix(".manifest.cbor").read_bytes()
    assert (
        await node_sha256(fs_server.address, "/lfs1/manifest.cbor")
        == hashlib.sha256(manifest).digest()
    )
    assert fs_server.reboots == 1  # the application picks the model up on reset

    code, out = await run_cli("flash", str(model.path), "--to", spec, "--report", str(report))
    assert code == 0, out
    [row] = json.loads(report.read_text())
    assert row["outcome"] == "already_current"
    assert row["bytes_sent"] == 0
    assert fs_server.reboots == 1

    code, out = await run_cli("info", spec, "--json")
    [slot] = json.loads(out)["slots"]
    assert slot["model_version"] == model.version
    assert read_signed(model.path.with_suffix(".manifest.cbor")).manifest.sequence == 1


async def test_dry_run_tells_a_node_that_answers_from_one_that_does_not(
    fs_server: NativeSimServer, make_model: MakeModel, tmp_path: Path
) -> None:
    model = make_model(1)
    gone = tmp_path / "ttyACM9"
    report = tmp_path / "dry.json"
    code, out = await run_cli(
        "flash", str(model.path), "--dry-run", "--to", f"smp-serial:{fs_server.address}=fs-01",
        "--to", f"smp-serial:{gone}=gone-01", "--report", str(report),
    )  # fmt: skip
    rows = {r["node_id"]: r for r in json.loads(report.read_text())}
    assert rows["fs-01"]["verdict"] == "would flash", out
    assert rows["fs-01"]["path"].startswith("stock fs group (sha256)")
    assert rows["gone-01"]["verdict"].startswith("unreachable")
    assert f"no serial device {gone}" in rows["gone-01"]["verdict"]
    assert code == 3  # one node would not take the model


async def test_a_node_that_answers_without_fs_or_img_cannot_take_a_model(
    fs_server: NativeSimServer, make_model: MakeModel
) -> None:
    model = make_model(1)
    # An inventory that insists on the image path for a node without the img group.
    inventory = model.path.parent / "fleet.toml"
    inventory.write_text(
        f'[[node]]\nid = "fs-01"\ntransport = "smp-serial"\naddress = "{fs_server.address}"\n'
        'smp_kind = "image"\n'
    )
    report = inventory.with_suffix(".json")
    code, out = await run_cli(
        "flash", str(model.path), "--dry-run", "--fleet", str(inventory), "--report", str(report)
    )  # fmt: skip
    [row] = json.loads(report.read_text())
    assert row["verdict"].startswith("answered but cannot take a model"), out
    assert "the inventory says image, but the node has no img group" in row["verdict"]
    assert code == 3


async def test_a_node_killed_mid_upload_fails_alone_and_a_rerun_completes(
    fs_server: NativeSimServer, second_fs_server: NativeSimServer, make_model: MakeModel
) -> None:
    model = make_model(1)
    signed = read_signed(model.path.with_suffix(".manifest.cbor"))
    options = FlashOptions(retries=1, backoff_initial_s=0.1, backoff_max_s=0.2)

    def fleet() -> list[McuMgrFlasher]:
        return [
            McuMgrFlasher("fs-01", fs_server.address, timeout_s=2.0),
            McuMgrFlasher("fs-02", second_fs_server.address, timeout_s=2.0),
        ]

    flashers = fleet()
    try:
        observer = KillMidUpload("fs-01", fs_server, after=0)
        results = await flash_fleet(
            flashers, model.artifact, signed, options=options, observer=observer
        )
    finally:
        for f in flashers:
            await f.aclose()
    assert observer.killed
    report = {r["node_id"]: r for r in json.loads(report_json(results))}
    assert report["fs-02"]["outcome"] == "flashed"
    assert report["fs-01"]["outcome"] == Outcome.UNREACHABLE.value
    assert "fs-01" in report["fs-01"]["reason"]
    assert report["fs-01"]["attempts"] == 2

    # The node comes back (same flash); the rerun resumes what it holds and completes.
    await asyncio.to_thread(fs_server.start)
    flashers = fleet()
    try:
        results = await flash_fleet(flashers, model.artifact, signed, options=options)
    finally:
        for f in flashers:
            await f.aclose()
    outcomes = {r.node_id: r.outcome for r in results}
    assert outcomes == {"fs-01": Outcome.FLASHED, "fs-02": Outcome.ALREADY_CURRENT}
    assert (
        await node_sha256(fs_server.address, "/lfs1/model.tflite")
        == hashlib.sha256(model.artifact).digest()
    )


async def test_an_error_code_is_named_and_a_permanent_one_is_not_retried(
    fs_server: NativeSimServer, make_model: MakeModel, tmp_path: Path
) -> None:
    model = make_model(1)
    inventory = tmp_path / "fleet.toml"
    inventory.write_text(
        f'[defaults]\nretries = 3\n[[node]]\nid = "fs-01"\ntransport = "smp-serial"\n'
        f'address = "{fs_server.address}"\nmodel_dir = "/sd0/models"\n'
    )
    report = tmp_path / "report.json"
    code, out = await run_cli(
        "flash", str(model.path), "--fleet", str(inventory), "--report", str(report)
    )
    [row] = json.loads(report.read_text())
    assert code == 3, out
    assert row["outcome"] == "failed"
    assert row["attempts"] == 1  # MOUNT_POINT_NOT_FOUND cannot change on a retry
    assert "MOUNT_POINT_NOT_FOUND in fs upload of /sd0/models/model.tflite" in row["reason"]
    assert "group 8" not in row["reason"]
    assert "rc " not in row["reason"]


async def test_requests_the_node_drops_in_a_pipeline_are_sent_again_in_the_same_attempt(
    fs_server: NativeSimServer, make_model: MakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    """Three full requests in flight overrun this node's UART buffers (it drops one): the
    upload notices and sends the model again, in the same attempt; the node's hash agrees."""

    class Greedy(Capabilities):
        @property
        def pipeline_bytes(self) -> int:
            return 4 * self.max_message  # more than the node takes at once

    model = make_model(1)
    signed = read_signed(model.path.with_suffix(".manifest.cbor"))
    link = McuMgrLink("fs-01", fs_server.address, timeout_s=1.0)
    await link.open()
    caplog.set_level(logging.INFO, logger="firmware_tools.flash.mcumgr.fs_path")
    try:
        caps = await probe(link)
        greedy = Greedy(**{f.name: getattr(caps, f.name) for f in dataclasses.fields(caps)})
        assert greedy.pipeline_depth == 3
        path = FsPath(link, greedy, FsLayout("/lfs1"))
        await path.upload(model.artifact, signed, lambda _d, _t: None)
    finally:
        await link.close()
    assert "sending the model again" in caplog.text
    assert (
        await node_sha256(fs_server.address, "/lfs1/model.tflite")
        == hashlib.sha256(model.artifact).digest()
    )
