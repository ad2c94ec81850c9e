"""The whole gateway forwards: readings committed through its journal become summaries,
its alerts become alert events and counts, node status becomes events, and the backlog
shows in /metrics — all read back from a real VictoriaMetrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.ingest import Envelope
from gateway.protocol.messages import Channel, ReadingBatch, Sample, Status, TimeBase, Transport
from tests.fixtures.forward import now_ms
from tests.fixtures.gateway import gateway_config, running_gateway
from tests.fixtures.servers import VictoriaMetrics
from tests.fixtures.victoria import samples_per_identity

CH = (Channel("current", "A"),)


async def test_gateway_forwards_summaries_alerts_and_status(
    tmp_path: Path, own_victoria: VictoriaMetrics
) -> None:
    cfg = gateway_config(
        tmp_path,
        site="gw",
        alerts={"use_default_rules": False,
                "rules": {"hot": {"kind": "threshold", "channel": "current", "above": 10.0}}},
        forward={"enabled": True, "url": own_victoria.url, "interval_s": 1.0,
                 "late_grace_s": 0.2, "batch_max_age_s": 0.1},
    )  # fmt: skip
    async with running_gateway(cfg) as gw:
        assert gw.forwarder is not None
        await gw.forwarder.ready.wait()
        seq = 0
        for i in range(40):
            seq += 1
            value = 20.0 if 10 <= i < 20 else 1.0  # raises, then clears, the "hot" alert
            t = now_ms()
            batch = ReadingBatch("pump-9", 7, seq, TimeBase.UNIX_MS, CH, (Sample(t, (value,)),))
            await gw.queue.put(Envelope(batch, Transport.MQTT, t))
            if i == 5:
                seq += 1
                status = Status(
                    "pump-9", 7, seq, TimeBase.UNIX_MS, t, 1000, 3300, -60, 2048, "1.2.0", 0
                )
                await gw.queue.put(Envelope(status, Transport.MQTT, t))
            await asyncio.sleep(0.05)
        rendered = gw.metrics.render()
        for gauge in ("forward_backlog_points", "forward_backlog_bytes", "forward_oldest_undelivered_age_s",
                      "forward_drain_points_per_s", "forward_time_to_full_s"):  # fmt: skip
            assert f"fieldgate_{gauge} " in rendered
        async with asyncio.timeout(15):
            while True:
                await asyncio.sleep(0.3)
                names = {k[0] for k in samples_per_identity(own_victoria)}
                if {"fieldgate_alert_count_cleared", "fieldgate_summary_count"} <= names:
                    break
        assert gw.forwarder.delivered_points > 0
    counts = samples_per_identity(own_victoria)
    assert all(n == 1 for n in counts.values())
    kinds = {
        dict(labels)["kind"]
        for name, labels, _ in counts
        if name == "fieldgate_alert_severity_level"
    }
    assert kinds == {"raised", "cleared"}
    assert any(name == "fieldgate_node_status_battery_mv" for name, _, _ in counts)
    summary_total = sum(
        1
        for name, labels, _ in counts
        if name == "fieldgate_summary_count" and ("node", "pump-9") in labels
    )
    assert summary_total >= 2, "the readings span at least two one-second intervals"


def _query(vm: VictoriaMetrics, expr: str) -> dict[str, object]:
    """Run a dashboard expression (Grafana's variables as match-all) as an instant query."""
    import json
    import urllib.parse

    grafana = {"$site": ".*", "$node": ".*", "$channel": ".*", "$__range": "1h"}
    for var, value in grafana.items():
        expr = expr.replace(var, value)
    query = urllib.parse.urlencode({"query": expr})
    return dict(json.loads(vm.get(f"/api/v1/query?{query}", 10)))


async def test_every_dashboard_query_runs_on_forwarded_data(
    tmp_path: Path, own_victoria: VictoriaMetrics
) -> None:
    """The Grafana dashboard's PromQL is valid, and its summary and quality panels find the
    data a gateway forwarded."""
    import json

    await test_gateway_forwards_summaries_alerts_and_status(tmp_path, own_victoria)
    own_victoria.flush()
    dash = json.loads((Path(__file__).parents[3] / "dashboards/grafana/fieldgate.json").read_text())
    found: dict[str, bool] = {}
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            answer = _query(own_victoria, target["expr"])
            assert answer["status"] == "success", (panel["title"], answer)
            data = answer["data"]
            assert isinstance(data, dict)
            found[panel["title"]] = found.get(panel["title"], False) or bool(data["result"])
    for title in (
        "Nodes reporting",
        "Mean, min and max",
        "Completeness",
        "Alert timeline",
        "Node health",
    ):
        assert found[title], f"{title}: no data"
