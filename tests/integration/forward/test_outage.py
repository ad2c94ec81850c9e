"""Store-and-forward across a store outage, against a real VictoriaMetrics.

Readings keep arriving while the store is stopped and restarted; afterwards every
summary is in the store exactly once (samples counted per series and timestamp: this
VictoriaMetrics keeps doubles) and the backlog is empty.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.forward.forwarder import Forwarder
from tests.fixtures.forward import Plant, fast_forward_config
from tests.fixtures.servers import VictoriaMetrics
from tests.fixtures.tasks import in_background
from tests.fixtures.victoria import samples_per_identity, values_of


async def _wait_drained(fwd: Forwarder, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while fwd.backlog.counts()[0] and sum(fwd.backlog.counts()[0].values()):
            await asyncio.sleep(0.1)


async def test_store_restart_under_load_every_summary_arrives_exactly_once(
    tmp_path: Path, own_victoria: VictoriaMetrics
) -> None:
    plant = Plant(tmp_path / "journal.db")
    cfg = fast_forward_config(own_victoria.url, drain_max_points_per_s=2000)
    fwd = Forwarder(cfg, site="s1", journal_path=plant.path, backlog_path=tmp_path / "forward.db")
    async with in_background(fwd.run(), "test:forward"):
        await fwd.ready.wait()
        for step in range(300):  # ~6 s of load at 50 commits/s
            plant.step()
            if step == 60:
                own_victoria.stop()  # the uplink goes down under load
            if step == 200:
                assert fwd.online is False
                assert sum(fwd.backlog.counts()[0].values()) > 0, "nothing piled up"
                assert fwd.oldest_age_s() > 0
                assert fwd.time_to_full_s() > 0, "filling: a finite time to full"
                own_victoria.start()
            await asyncio.sleep(0.02)
        await asyncio.sleep(cfg.interval_s + cfg.late_grace_s + 1.0)  # the last interval closes
        await _wait_drained(fwd, 30)
        assert fwd.retries > 0
    plant.close()

    counts = samples_per_identity(own_victoria)
    doubles = {k: n for k, n in counts.items() if n != 1}
    assert not doubles, f"delivered more than once: {list(doubles.items())[:5]}"
    summaries = values_of(own_victoria, '{__name__="fieldgate_summary_count",channel="current"}')
    assert {dict(k)["node"] for k in summaries} == set(plant.nodes)
    for labels, samples in summaries.items():
        node = dict(labels)["node"]
        # Every committed reading is counted in exactly one summary interval.
        assert sum(v for _, v in samples) == plant.committed[node], node
    quality = values_of(own_victoria, '{__name__="fieldgate_quality_samples"}')
    assert sum(v for s in quality.values() for _, v in s) == sum(plant.committed.values())
