"""A long outage fills the backlog's budget: the ladder gives up raw readings first, then
summary detail, never an alert; when the link returns the gateway reports exactly what it
gave up, and every alert arrives once (real VictoriaMetrics)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.events import Alert, AlertEvent, AlertEventKind, AlertState, Severity
from gateway.forward.forwarder import Forwarder
from tests.fixtures.forward import Plant, fast_forward_config, now_ms
from tests.fixtures.servers import VictoriaMetrics
from tests.fixtures.tasks import in_background
from tests.fixtures.victoria import samples_per_identity, values_of


def _alert_event(i: int) -> AlertEvent:
    t = now_ms()
    alert = Alert(f"al-{i}", "hot:pump-01", "hot", "pump-01", Severity.WARNING,
                  AlertState.RAISED, "hot", 20.0 + i, t)  # fmt: skip
    return AlertEvent(f"al-{i}:raised", AlertEventKind.RAISED, t, alert)


async def test_full_budget_evicts_by_the_ladder_keeps_alerts_and_reports_the_loss(
    tmp_path: Path, own_victoria: VictoriaMetrics
) -> None:
    own_victoria.stop()  # the uplink is down from the start
    plant = Plant(tmp_path / "journal.db")
    cfg = fast_forward_config(
        own_victoria.url, interval_s=0.5, late_grace_s=0.1, raw_channels=["current"],
        budgets={"total_bytes": 8192, "raw_bytes": 4096, "alerts_bytes": 1024},
    )  # fmt: skip
    fwd = Forwarder(cfg, site="b", journal_path=plant.path, backlog_path=tmp_path / "forward.db")
    async with in_background(fwd.run(), "test:forward"):
        await fwd.ready.wait()
        for i in range(200):
            plant.step()
            if i % 10 == 0:
                fwd.on_alert_event(_alert_event(i // 10))  # 20 alerts, far over their budget
            await asyncio.sleep(0.02)
        await asyncio.sleep(cfg.interval_s + cfg.late_grace_s + 0.5)
        await fwd.summarise_now()
        evicted = fwd.backlog.evictions()
        assert evicted["raw"] > 0
        assert evicted["downsampled_summaries"] > 0
        assert fwd.backlog.alerts_over_budget
        own_victoria.start()  # the link returns
        for _ in range(2):  # drained, then once more for the report of the last evictions
            async with asyncio.timeout(30):
                while sum(fwd.backlog.counts()[0].values()):
                    await asyncio.sleep(0.1)
            await asyncio.sleep(cfg.interval_s + cfg.late_grace_s)
            await fwd.summarise_now()
        final = fwd.backlog.evictions()
        gauges = fwd.gauges()
        assert gauges["forward_evicted_raw"]() == final["raw"], "visible in /metrics"
        assert gauges["forward_evicted_downsampled_summaries"]() == final["downsampled_summaries"]
    plant.close()

    counts = samples_per_identity(own_victoria)
    doubles = [k for k, n in counts.items() if n != 1]
    assert not doubles, doubles[:5]
    alerts = {
        dict(labels)["alert_id"]
        for name, labels, _ in counts
        if name == "fieldgate_alert_severity_level"
    }
    assert alerts == {f"al-{i}" for i in range(20)}, "every alert arrived, none evicted"
    reported = {
        field: max(samples, key=lambda s: s[0])[1]
        for field in ("evicted_raw", "downsampled_summaries", "evicted_summaries")
        for samples in values_of(own_victoria, f'{{__name__="fieldgate_forward_{field}"}}').values()
    }
    assert reported == {
        "evicted_raw": final["raw"],
        "downsampled_summaries": final["downsampled_summaries"],
        "evicted_summaries": final["summaries"],
    }, "the last loss report equals the backlog's own counts"
