"""What the store refuses: a bad batch is quarantined, a bad token raises an operator alert.

401 comes from a real VictoriaMetrics started with ``-httpAuth.*``. VictoriaMetrics never
answers 400 (it skips lines it cannot parse and says 204), so for the 400 case a tiny
local HTTP server stands in front of it: it answers 400 for the one batch holding a
marked point and passes every other batch through to the real store unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.events import AlertEvent, AlertEventKind, Severity
from gateway.forward.backlog import Backlog
from gateway.forward.forwarder import Forwarder
from gateway.forward.points import SUMMARY, point
from tests.fixtures.forward import fast_forward_config
from tests.fixtures.ports import free_port
from tests.fixtures.servers import VictoriaMetrics
from tests.fixtures.tasks import in_background
from tests.fixtures.victoria import samples_per_identity

BASE_MS = 1_700_000_000_000
TAGS = {"site": "r", "node": "n1", "channel": "current", "unit": "A", "interval": "60s"}


def _fill(path: Path, n: int, poison_at: int | None = None) -> None:
    backlog = Backlog(path).open()
    backlog.enqueue(
        point(SUMMARY, {**TAGS, "node": "poison" if i == poison_at else "n1"}, {"count": i},
              BASE_MS + i * 60_000)
        for i in range(1, n + 1)
    )  # fmt: skip
    backlog.close()


@pytest.fixture
async def refusing_proxy(own_victoria: VictoriaMetrics) -> AsyncIterator[tuple[str, list[str]]]:
    """400 for a batch with a point of node "poison"; every other batch goes to the store.
    Yields its URL and the Content-Encoding of every request it saw."""
    encodings: list[str] = []

    async def write(request: web.Request) -> web.Response:
        encodings.append(request.headers.get("Content-Encoding", ""))
        body = await request.read()  # aiohttp has already undone the gzip
        if b"node=poison" in body:
            return web.json_response(
                {"code": "invalid", "message": "partial write: field type conflict"}, status=400
            )
        async with aiohttp.ClientSession() as session, session.post(
            f"{own_victoria.url}/api/v2/write", params=request.query, data=body,
        ) as resp:  # fmt: skip
            return web.Response(status=resp.status, body=await resp.read())

    app = web.Application()
    app.router.add_post("/api/v2/write", write)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", encodings
    finally:
        await runner.cleanup()


async def _drained(fwd: Forwarder, timeout_s: float = 20) -> None:
    async with asyncio.timeout(timeout_s):
        await fwd.ready.wait()
        while sum(fwd.backlog.counts()[0].values()):
            await asyncio.sleep(0.05)


async def test_a_refused_point_is_quarantined_with_its_reason_and_the_rest_arrives(
    tmp_path: Path, own_victoria: VictoriaMetrics, refusing_proxy: tuple[str, list[str]]
) -> None:
    url, encodings = refusing_proxy
    _fill(tmp_path / "forward.db", 50, poison_at=25)
    cfg = fast_forward_config(url, batch_max_points=10)
    fwd = Forwarder(
        cfg, site="r", journal_path=tmp_path / "none.db", backlog_path=tmp_path / "forward.db"
    )
    async with in_background(fwd.run(), "test:forward"):
        await _drained(fwd)
        quarantined = fwd.backlog.quarantined()
        kept = [
            line for _, line in fwd.backlog.quarantined_lines()
        ]  # `forward export --quarantined`
    assert len(kept) == 1
    assert b"node=poison" in kept[0]
    assert len(quarantined) == 1
    status, points, reason, _ = quarantined[0]
    assert (status, points) == (400, 1), "narrowed down to the one refused point"
    assert "field type conflict" in reason
    arrived = sorted(
        (ts - BASE_MS) // 60_000
        for (name, labels, ts), n in samples_per_identity(own_victoria).items()
        if name == "fieldgate_summary_count" and n == 1
    )
    assert arrived == [*range(1, 25), *range(26, 51)], "every other point arrives"
    assert fwd.quarantined_batches == 1
    assert set(encodings) == {"gzip"}, "every batch gzipped on the wire"
    assert len(encodings) <= 12, "narrowing costs a few requests, not one per point"


async def test_a_rejected_token_raises_an_operator_alert_and_loses_nothing(tmp_path: Path) -> None:
    vm = VictoriaMetrics(
        workdir=tmp_path / "vm",
        extra_args=("-httpAuth.username=fg", "-httpAuth.password=right"),
        basic_auth=("fg", "right"),
    )
    vm.start()
    try:
        token = tmp_path / "token"
        token.write_text("fg:wrong\n")
        _fill(tmp_path / "forward.db", 30)
        cfg = fast_forward_config(vm.url, auth_scheme="Basic", token_file=str(token))
        alerts: list[AlertEvent] = []

        def deliver(event: AlertEvent) -> None:  # what Gateway._deliver_alert does
            alerts.append(event)
            fwd.on_alert_event(event)

        fwd = Forwarder(
            cfg, site="r", journal_path=tmp_path / "none.db",
            backlog_path=tmp_path / "forward.db", alert_sink=deliver,
        )  # fmt: skip
        async with in_background(fwd.run(), "test:forward"):
            async with asyncio.timeout(10):
                while not alerts:
                    await asyncio.sleep(0.05)
            raised = alerts[0]
            assert raised.kind is AlertEventKind.RAISED
            assert raised.alert.rule == "forward_auth"
            assert raised.alert.severity is Severity.CRITICAL
            assert "401" in raised.alert.message
            assert "wrong" not in raised.alert.message, "the token is never shown"
            await asyncio.sleep(1.0)  # several refused retries
            waiting = [
                line for _, line in fwd.backlog.lines() if line.startswith(b"fieldgate_summary,")
            ]
            assert len(waiting) == 30, "nothing dropped while refused"
            assert len(alerts) == 1, "one alert, not one per retry"
            token.write_text("fg:right\n")  # the operator fixes the token file
            await _drained(fwd)
        assert [e.kind for e in alerts] == [AlertEventKind.RAISED, AlertEventKind.CLEARED]
        counts = samples_per_identity(vm)
        summaries = [k for k in counts if k[0] == "fieldgate_summary_count"]
        assert len(summaries) == 30
        assert all(counts[k] == 1 for k in summaries)
        # The operator alert itself reached the store once the token worked.
        assert any(
            k[0] == "fieldgate_alert_severity_level" and ("rule", "forward_auth") in k[1]
            for k in counts
        )
    finally:
        vm.stop()


async def test_retry_after_on_429_is_honoured_then_everything_arrives(
    tmp_path: Path, own_victoria: VictoriaMetrics
) -> None:
    """VictoriaMetrics does not throttle on demand, so a local server answers the first
    write with 429 and Retry-After: 1, then passes writes through to it."""
    seen: list[float] = []

    async def write(request: web.Request) -> web.Response:
        seen.append(asyncio.get_running_loop().time())
        body = await request.read()
        if len(seen) == 1:
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down")
        async with aiohttp.ClientSession() as session, session.post(
            f"{own_victoria.url}/api/v2/write", params=request.query, data=body
        ) as resp:  # fmt: skip
            return web.Response(status=resp.status, body=await resp.read())

    app = web.Application()
    app.router.add_post("/api/v2/write", write)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        _fill(tmp_path / "forward.db", 20)
        cfg = fast_forward_config(f"http://127.0.0.1:{port}", retry_first_s=0.05)
        fwd = Forwarder(
            cfg, site="r", journal_path=tmp_path / "none.db", backlog_path=tmp_path / "forward.db"
        )
        async with in_background(fwd.run(), "test:forward"):
            await _drained(fwd)
    finally:
        await runner.cleanup()
    assert seen[1] - seen[0] >= 0.95, "waited as told, not the 0.05 s backoff"
    counts = samples_per_identity(own_victoria)
    assert sorted(n for k, n in counts.items() if k[0] == "fieldgate_summary_count") == [1] * 20
