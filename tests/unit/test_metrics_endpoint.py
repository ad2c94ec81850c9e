"""The metrics endpoint answers normal scrapes and shrugs off abusive requests."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from gateway.metrics import Metrics, serve_metrics
from tests.fixtures.ports import free_port


async def scrape(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_request_head_over_64_kib_is_dropped_quietly_and_the_next_scrape_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    ready = asyncio.Event()
    server = asyncio.create_task(serve_metrics(Metrics(), "127.0.0.1", port, ready))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        huge = b"GET /metrics HTTP/1.1\r\nX-Filler: " + b"a" * 70_000 + b"\r\n\r\n"
        with contextlib.suppress(ConnectionError):
            assert b"200 OK" not in await scrape(port, huge)
        answer = await scrape(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert not server.done()
        # Before: asyncio logged an unhandled LimitOverrunError per such request.
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


def test_fifty_thousand_made_up_ids_make_a_bounded_rejected_series() -> None:
    metrics = Metrics()
    for i in range(50_000):
        metrics.rejected_nodes[("mqtt", f"fake-{i}")] += 1
    metrics.rejected_nodes[("mqtt", "fake-3")] += 1  # an id already counted keeps its series
    assert len(metrics.rejected_nodes) == 101
    assert metrics.rejected_nodes[("mqtt", "_other")] == 49_900
    assert metrics.rejected_nodes[("mqtt", "fake-3")] == 2
    assert sum(metrics.rejected_nodes.values()) == 50_001
    page = metrics.render()
    assert page.count("fieldgate_rejected_total{") == 101
    assert len(page) < 20_000
