"""Screenshots of every dashboard page at phone (360 px) and desktop (1920 px) width.

``python -m dashboards.screenshots [OUT_DIR]`` starts a real gateway with simulated nodes
(one with a closing valve, so there is an alert to show) and the dashboard on a free
loopback port, signs in with headless Chromium (Debian's ``chromium``, driven by
Playwright) and writes ``<page>-<width>.png`` into OUT_DIR (default docs/screenshots).
Half the nodes talk MQTT through a local broker (mosquitto, else amqtt) and have model
slots, and a flash job onto them is run from the Models page first, so the Models and job
pages have a real job to show.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.async_api import Page, async_playwright

from dashboards.users import Role, UserStore, web_db_path
from firmware_tools.sim.fleet import SimConfig, Simulator
from firmware_tools.sim.signals import Fault, FaultKind
from gateway.app import Gateway
from gateway.config import load_config
from gateway.demo.broker import local_broker

PAGES = {
    "login": "/login",
    "overview": "/",
    "nodes": "/nodes",
    "node": "/nodes/pump-01",
    "alerts": "/alerts",
    "models": "/models",
    "job": "/jobs/1",
    "settings": "/settings",
}
WIDTHS = {"phone": (360, 780), "desktop": (1920, 1080)}
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
NODES = 4


def _signed_artifact(work: Path) -> tuple[Path, Path]:
    """A signed node model in <data_dir>/models, so the Models page shows a verified manifest,
    and the model the nodes start with (version 1.1.0, sequence 1). Returns (public key,
    factory model)."""
    from firmware_tools.describe import build_manifest
    from firmware_tools.signing import (
        generate_keypair,
        load_private_key,
        sign_manifest,
        write_signed,
    )

    private, public = generate_keypair(work / "keys")
    models = work / "var" / "models"
    models.mkdir(parents=True)
    artifact = models / "pump_ae.tflite"
    shutil.copy(
        Path(__file__).parents[1] / "tinymodels" / "artifacts" / "node_model.tflite", artifact
    )
    manifest = build_manifest(
        artifact.read_bytes(), name="pump_ae", version="1.2.0", sequence=7, arena_bytes=4096
    )
    write_signed(sign_manifest(manifest, load_private_key(private)), artifact)
    factory = work / "factory" / "pump_ae.tflite"
    factory.parent.mkdir()
    factory.write_bytes(artifact.read_bytes() + bytes(16))  # a distinct file; TFLM ignores it
    old = build_manifest(
        factory.read_bytes(), name="pump_ae", version="1.1.0", sequence=1, arena_bytes=4096
    )
    write_signed(sign_manifest(old, load_private_key(private)), factory)
    return public, factory


async def _sign_in(page: Page, url: str) -> None:
    await page.goto(url + "/login")
    await page.fill("input[name=username]", "admin")
    await page.fill("input[name=password]", "screenshot-pass")
    await page.click("button[type=submit]")
    await page.wait_for_url(url + "/")


async def _run_job(page: Page, url: str) -> None:
    """Flash the held model onto every node that can take it, from the Models page."""
    await page.goto(url + "/models")
    boxes = page.locator("input[name=nodes]:not([disabled])")
    for _ in range(100):  # until the MQTT nodes have been heard
        if await boxes.count() >= NODES // 2:
            break
        await page.wait_for_timeout(200)
        await page.reload()
    for i in range(await boxes.count()):
        await boxes.nth(i).check()
    await page.get_by_role("button", name="Start flash job").click()
    await page.wait_for_url("**/jobs/*")
    await page.locator("#job-state", has_text="all nodes ok").wait_for(timeout=60_000)


async def capture(out: Path) -> list[Path]:
    work = Path(tempfile.mkdtemp(prefix="fieldgate-shots-"))
    public_key, factory = _signed_artifact(work)
    async with local_broker(work) as (broker_url, _name):
        return await _capture(out, work, public_key, factory, broker_url)


async def _capture(
    out: Path, work: Path, public_key: Path, factory: Path, broker: str
) -> list[Path]:
    # Odd nodes on serial ptys, even ones over MQTT with model slots (the job flashes those).
    ids = [f"pump-{i:02d}" for i in range(1, NODES + 1, 2)]
    cfg = load_config(
        data_dir=str(work / "var"), site="demo", mqtt={"url": broker}, metrics={"enabled": False},
        web={"enabled": True, "port": 0}, scoring={"calibration_rows": 16, "max_batch_delay_ms": 20, "public_key_path": str(public_key)},
        serial={"ports": [{"path": str(work / "dev" / f"tty{n}")} for n in ids], "reopen_interval_s": 0.05},
        alerts={"rules": {"flow_low": {"kind": "threshold", "channel": "flow", "below": 60.0, "severity": "critical"}}},
    )  # fmt: skip
    users = UserStore(web_db_path(cfg.data_dir))
    users.add("admin", Role.ADMIN, "screenshot-pass")
    users.close()
    gateway = Gateway(cfg)
    sim = SimConfig(
        nodes=NODES, transports=("serial", "mqtt"), pty_dir=work / "dev", rate_hz=10.0,
        batch_size=2, status_interval_ms=2000, broker_url=broker, site="demo",
        slots_dir=work / "slots", fleet_public_key=public_key, factory_model=factory,
        faults=(("pump-02", Fault(FaultKind.VALVE_CLOSED, start_s=2.0, duration_s=600.0)),),
    )  # fmt: skip
    written: list[Path] = []
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(gateway.run(), name="screenshots:gateway")
        try:
            await asyncio.wait_for(gateway.web_ready.wait(), 20)
            assert gateway.web_view is not None
            url = f"http://127.0.0.1:{gateway.web_view.bound_port[0]}"
            async with Simulator(sim), async_playwright() as pw:
                await asyncio.sleep(8)  # history for the charts, and the valve alert
                browser = await pw.chromium.launch(
                    executable_path=shutil.which("chromium"), args=ARGS
                )
                setup = await browser.new_page()
                await _sign_in(setup, url)
                await _run_job(setup, url)
                await setup.close()
                for label, (width, height) in WIDTHS.items():
                    page = await browser.new_page(viewport={"width": width, "height": height})
                    await page.goto(url + "/login")
                    await page.screenshot(path=out / f"login-{label}.png", full_page=True)
                    await _sign_in(page, url)
                    for name, path in PAGES.items():
                        if name == "login":
                            continue
                        await page.goto(url + path)
                        await page.wait_for_timeout(2500 if name == "node" else 300)
                        target = out / f"{name}-{label}.png"
                        await page.screenshot(path=target, full_page=True)
                        written.append(target)
                    await page.close()
                await browser.close()
        finally:
            task.cancel()
    return written


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(capture(out)):
        print(path)


if __name__ == "__main__":
    main()
