"""The dashboard in a real headless Chromium (Debian's package driven by Playwright), served by
a real gateway with simulated nodes: sign in, watch a node's live chart grow, acknowledge
the alert the simulator's fault raised; flash a model onto a simulated MQTT node (real
mosquitto, the node's own A/B slots and self-test), watch the job live, roll it back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from firmware_tools.sim.signals import Fault, FaultKind
from tests.fixtures.dashboard import PASSWORDS, flash_kit, running_dashboard
from tests.fixtures.servers import Mosquitto

playwright = pytest.importorskip("playwright.async_api")
CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
]
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
NODE = "pump-01"
RULE = "flow_low"
ALERTS = {
    "use_default_rules": False,
    "rules": {
        RULE: {
            "kind": "threshold",
            "channel": "flow",
            "below": 60.0,
            "hysteresis": 5.0,
            "severity": "critical",
        }
    },
}
# The valve closes after 1 s and stays closed: flow falls from ~125 to ~4 l/min.
VALVE = ((NODE, Fault(FaultKind.VALVE_CLOSED, start_s=1.0, duration_s=600.0)),)


async def test_sign_in_watch_the_live_chart_and_acknowledge_the_alert(tmp_path: Path) -> None:
    async with (
        running_dashboard(tmp_path, nodes=2, sim={"faults": VALVE}, alerts=ALERTS) as dash,
        playwright.async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            await page.goto(dash.url + "/")
            assert page.url.endswith("/login?next=/")
            await page.fill("input[name=username]", "operator")
            await page.fill("input[name=password]", PASSWORDS["operator"])
            await page.click("button[type=submit]")
            await page.wait_for_url(dash.url + "/")
            assert await page.locator("h1").inner_text() == "Overview"

            await page.goto(f"{dash.url}/nodes/{NODE}")
            chart = page.locator("#chart-channels")
            await chart.locator("canvas").first.wait_for()
            assert await chart.locator("canvas").count() == 5  # one chart per channel
            # Live: server-sent events arrive and the chart is redrawn with new readings.
            await page.wait_for_function(
                "() => +document.getElementById('chart-channels').dataset.updates >= 2",
                timeout=20_000,
            )
            status = await page.locator("#chart-status").inner_text()
            assert status.startswith("Live:")

            await page.goto(dash.url + "/alerts")
            for _ in range(40):  # the fault raises the alert within a few seconds
                if await page.locator("article.alert-item").count():
                    break
                await page.wait_for_timeout(500)
                await page.reload()
            item = page.locator("article.alert-item").first
            assert NODE in await item.inner_text()
            assert "raised" in await item.inner_text()
            await item.get_by_label("Comment").fill("closing the bypass valve")
            await item.get_by_role("button", name="Acknowledge").click()
            await page.wait_for_url("**/alerts?done=ack")
            acked = await page.locator("article.alert-item").first.inner_text()
            assert "acknowledged by operator" in acked
            assert "closing the bypass valve" in acked
            assert errors == []  # no CSP violation or script error on the way
        finally:
            await browser.close()
    # The acknowledgement is in the durable alert history, by name.
    from gateway.store.alerts import AlertStore, alerts_path_for

    with AlertStore(alerts_path_for(dash.gateway.config.journal_path)) as store:
        acks = [e for e in store.history() if e.kind.value == "acknowledged"]
    assert [(e.alert.node_id, e.alert.acked_by) for e in acks] == [(NODE, "operator")]


GHOST = "pump-09"  # listed in the fleet inventory, never powered


async def test_an_operator_flashes_a_node_watches_it_live_and_rolls_it_back(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    kit = flash_kit(tmp_path, mosquitto.url, mqtt_prefix)
    # A second node that never answers keeps the job running for one link timeout (no
    # retries), so the job page is certainly loaded while the job runs and must be updated
    # live; it also shows how a failed node reads.
    (tmp_path / "var" / "models" / "fleet.toml").write_text(
        "[defaults]\nretries = 0\n\n"
        f'[[node]]\nid = "{GHOST}"\ntransport = "mqtt"\naddress = "{kit.broker_url}"\n'
        f'site = "{kit.site}"\n'
    )
    async with (
        running_dashboard(tmp_path, nodes=1, flash=kit) as dash,
        playwright.async_playwright() as pw,
    ):
        assert dash.sim is not None
        store = dash.sim.xfer_nodes[NODE].store
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(dash.url + "/login?next=/models")
            await page.fill("input[name=username]", "operator")
            await page.fill("input[name=password]", PASSWORDS["operator"])
            await page.click("button[type=submit]")
            await page.wait_for_url(dash.url + "/models")
            node_box = page.locator(f"input[name=nodes][value='{NODE}']")
            for _ in range(100):  # until the gateway has heard the node over the broker
                if await node_box.count():
                    break
                await page.wait_for_timeout(200)
                await page.reload()
            await page.check(f"input[name=artifact][value='{kit.update_sha256}']")
            await node_box.check()
            await page.check(f"input[name=nodes][value='{GHOST}']")
            await page.get_by_role("button", name="Start flash job").click()
            await page.wait_for_url("**/jobs/*")
            assert await page.locator("#job[sse-connect]").count() == 1  # loaded while running
            await page.evaluate("() => { window.fgSamePage = true; }")

            # Live: the rows change over server-sent events, without a reload.
            row = page.locator(f"#job-nodes tr[data-node='{NODE}']")
            await row.locator(".result", has_text="flashed").wait_for(timeout=60_000)
            ghost = page.locator(f"#job-nodes tr[data-node='{GHOST}']")
            await ghost.locator(".result", has_text="unreachable").wait_for(timeout=60_000)
            assert "failed on 1 of 2" in await page.locator("#job-state").inner_text()
            assert "powered and in reach" in await ghost.inner_text()
            assert "1.1.0 → 1.2.0" in await row.inner_text()
            assert await page.evaluate("() => window.fgSamePage === true")
            assert [(s.model_version, s.confirmed) for s in store.info() if s.active] == [
                ("1.2.0", True)
            ]

            await page.goto(dash.url + "/models")
            await page.get_by_role("button", name=f"Roll back {NODE}").click()
            await page.wait_for_url("**/jobs/*")
            result = page.locator(f"#job-nodes tr[data-node='{NODE}'] .result")
            await result.filter(has_text="reverted").wait_for(timeout=60_000)
            assert "all nodes ok" in await page.locator("#job-state").inner_text()
            assert [(s.model_version, s.confirmed) for s in store.info() if s.active] == [
                ("1.1.0", True)
            ]
            assert errors == []
        finally:
            await browser.close()
