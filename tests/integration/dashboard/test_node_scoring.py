"""The node page says how the node is scored (issue 13): which gateway detector scored it
(the trained model, or the fallback T² + MSET on the node's own channels), the fusion state
and the channels that contributed most, from the scores the real pipeline emitted for a
simulated pump whose valve closes."""

from __future__ import annotations

import asyncio
import html as html_lib
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from firmware_tools.sim.signals import Fault, FaultKind
from tests.fixtures.dashboard import login, running_dashboard

pytestmark = pytest.mark.timeout(120)
NODE = "pump-01"
# The valve closes after 6 s (the node's baseline is calibrated by then: 16 rows) and stays
# closed: flow falls from ~125 to ~4 l/min.
VALVE = ((NODE, Fault(FaultKind.VALVE_CLOSED, start_s=6.0, duration_s=600.0)),)
SCORING: dict[str, Any] = {"calibration_rows": 16, "max_batch_delay_ms": 20}
# No node channel maps to the trained model's: every node falls back to its own baseline.
NOTHING_MAPS: dict[str, Any] = {**SCORING, "channel_map": {"no_such_channel": "Current"}}


def _scoring(html: str) -> tuple[dict[str, str], list[tuple[str, int]]]:
    """The node page's scoring facts (label -> text) and its top channels (name, percent)."""
    found = re.search(r'<section class="card" id="scoring">(.*?)</section>', html, re.S)
    assert found is not None

    def text(fragment: str) -> str:
        return html_lib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment))).strip()

    facts = {
        text(dt): text(dd)
        for dt, dd in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", found.group(1), re.S)
    }
    top = [
        (name, int(share))
        for name, share in re.findall(r"<li><strong>(.*?)</strong> (\d+) %</li>", found.group(1))
    ]
    return facts, top


async def _anomalous_page(client: httpx.AsyncClient) -> tuple[dict[str, str], list[Any]]:
    """The node page once its latest gateway score is anomalous and names channels."""
    while True:
        response = await client.get(f"/nodes/{NODE}")
        if response.status_code == 200:
            facts, top = _scoring(response.text)
            if top:
                return facts, top
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("scoring", "detector"),
    [
        (SCORING, "trained gateway model 2.0.0"),
        (NOTHING_MAPS, "fallback: Hotelling T² + MSET on the node's own channels"),
    ],
    ids=["trained", "fallback"],
)
async def test_the_node_page_names_the_detector_fusion_and_top_channels(
    tmp_path: Path, scoring: dict[str, Any], detector: str
) -> None:
    gateway = running_dashboard(tmp_path, nodes=1, sim={"faults": VALVE}, scoring=scoring)
    async with gateway as dash, dash.client() as client:
        await login(client, "viewer")
        facts, top = await _anomalous_page(client)
        latest = (await client.get(f"/api/nodes/{NODE}/readings?limit=1")).json()["readings"]
        channels = set(latest[0]["values"])
    assert facts["Gateway detector"].startswith(detector)
    gateway_score = float(facts["Gateway score"].split()[0])
    assert gateway_score >= 1.0  # channels are named for anomalous scores only
    if facts["Gateway detector"].startswith("fallback"):
        assert {name for name, _ in top} <= channels  # the node's own channels
    else:
        assert all(name for name, _ in top)  # the trained model's display names ("vibration")
    assert all(0 < share <= 100 for _, share in top)
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)  # largest first
    # Fusion (the shipped rule is on by default): its state agrees with its fused score.
    state, fused = facts["Fusion"].split()[-2:]
    assert state == ("alarm" if float(fused) >= 1.0 else "normal")
    assert facts["Node model"] == "no node-model score"  # these simulated nodes run none
