"""The forwarding backlog on a disk that fills up (a real 4 MB tmpfs taken by a filler file),
against a real VictoriaMetrics that keeps doubles.

The forwarder keeps running, raises ``forward_storage`` once, and when space returns it
clears the alert, rebuilds the summaries it could not store from the journal, and sends
everything: every committed reading is in exactly one summary, nothing is stored twice.

Before: the backlog's COMMIT failed with SQLITE_FULL, its ROLLBACK raised "cannot rollback"
over the cause, and the forwarder task died (in ``fieldgate run``, the TaskGroup with it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.events import AlertEvent, AlertEventKind
from gateway.forward.forwarder import Forwarder
from tests.fixtures.forward import Plant, fast_forward_config
from tests.fixtures.gateway import wait_until
from tests.fixtures.servers import VictoriaMetrics
from tests.fixtures.tasks import in_background
from tests.fixtures.tmpfs import fill_disk, mounted_tmpfs
from tests.fixtures.victoria import samples_per_identity, values_of

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tiny", "4m") as mount:
        yield mount


async def _feed(plant: Plant) -> None:
    """Readings keep being committed to the journal (its own disk) the whole time."""
    while True:
        plant.step()
        await asyncio.sleep(0.02)


def _waiting(fwd: Forwarder) -> int:
    return sum(fwd.backlog.counts()[0].values())


async def test_a_full_backlog_disk_pauses_forwarding_and_loses_nothing(
    tmp_path: Path, tiny_disk: Path, own_victoria: VictoriaMetrics
) -> None:
    plant = Plant(tmp_path / "journal.db")
    cfg = fast_forward_config(own_victoria.url, drain_max_points_per_s=2000)
    alerts: list[AlertEvent] = []
    fwd = Forwarder(
        cfg,
        site="s1",
        journal_path=plant.path,
        backlog_path=tiny_disk / "forward.db",
        alert_sink=alerts.append,
    )

    def storage_alerts() -> list[AlertEventKind]:
        return [e.kind for e in alerts if e.alert.rule == "forward_storage"]

    async with in_background(fwd.run(), "test:forward") as task:
        await fwd.ready.wait()
        async with in_background(_feed(plant), "test:feed"):
            own_victoria.stop()  # summaries pile up in the backlog
            await wait_until(lambda: _waiting(fwd) > 0, what="points waiting in the backlog")
            filler = fill_disk(tiny_disk)
            # Summaries of new intervals cannot be stored now: the forwarder must live on.
            await wait_until(
                lambda: task.done() or storage_alerts(), timeout_s=30, what="the storage alert"
            )
            assert not task.done(), f"the forwarder died on a full disk: {task.exception()!r}"
            assert storage_alerts() == [AlertEventKind.RAISED]
            assert fwd.gauges()["forward_storage_fault"]() == 1.0
            await asyncio.sleep(1.5)  # more failed ticks and retries: still one alert
            assert storage_alerts() == [AlertEventKind.RAISED]
            own_victoria.start()  # the store is back while the disk is still full
            await asyncio.sleep(1.0)
            assert not task.done(), f"the forwarder died on a full disk: {task.exception()!r}"
            filler.unlink()  # space returns
            await wait_until(
                lambda: storage_alerts() == [AlertEventKind.RAISED, AlertEventKind.CLEARED],
                timeout_s=30,
                what="the storage alert cleared",
            )
            assert fwd.storage.fault is None
        # The feed has stopped: let its last interval close and everything drain.
        await asyncio.sleep(cfg.interval_s + cfg.late_grace_s + 1.0)
        await wait_until(lambda: _waiting(fwd) == 0, timeout_s=30, what="the backlog drained")
    plant.close()

    counts = samples_per_identity(own_victoria)
    doubles = {k: n for k, n in counts.items() if n != 1}
    assert not doubles, f"delivered more than once: {list(doubles.items())[:5]}"
    summaries = values_of(own_victoria, '{__name__="fieldgate_summary_count",channel="current"}')
    assert {dict(k)["node"] for k in summaries} == set(plant.nodes)
    for labels, samples in summaries.items():
        node = dict(labels)["node"]
        # Every committed reading is counted in exactly one summary interval: the
        # intervals that closed while the disk was full were rebuilt from the journal.
        assert sum(v for _, v in samples) == plant.committed[node], node
