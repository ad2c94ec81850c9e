"""Server-sent events: the overview's tiles and a node's chart points, pushed while a page is open.

A plain ``StreamingResponse`` writes the ``text/event-stream`` format (a few lines, below).
sse-starlette was tried first: its process-global shutdown watcher is a task created outside
any TaskGroup that outlives the server, which the gateway's lifecycle rules (and the test
suite's leftover-task check) reject; uvicorn's graceful-shutdown timeout ends our streams.

Each stream ends after ``MAX_STREAM_S``; the browser's EventSource reconnects, and the
reconnect passes the session check again, so a logged-out or expired session stops
receiving within that time. Reads go through the reader thread like every page.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import StreamingResponse

from dashboards import auth
from dashboards.data import Reads
from dashboards.templating import templates
from gateway.events import ScoreSource

router = APIRouter(include_in_schema=False)
Viewer = Annotated[auth.Session, Depends(auth.viewer)]
MAX_STREAM_S = 300.0
OVERVIEW_EVERY_S = 2.0


class EventSourceResponse(StreamingResponse):
    """Server-sent events from an async iterator of ``{"event": name, "data": text}``."""

    def __init__(self, events: AsyncIterator[dict[str, str]]) -> None:
        super().__init__(
            _encode(events),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )


async def _encode(events: AsyncIterator[dict[str, str]]) -> AsyncIterator[bytes]:
    yield b": stream open\n\n"
    async for event in events:
        lines = [f"event: {event['event']}"]
        lines += [f"data: {line}" for line in event["data"].splitlines() or [""]]
        yield ("\n".join(lines) + "\n\n").encode()


async def ticks(request: Request, every_s: float) -> AsyncIterator[None]:
    deadline = time.monotonic() + MAX_STREAM_S
    while time.monotonic() < deadline and not await request.is_disconnected():
        yield
        await asyncio.sleep(every_s)


@router.get("/events/overview")
async def overview_events(request: Request, _s: Viewer) -> EventSourceResponse:
    reads: Reads = request.app.state.reads
    fragment = templates.get_template("_overview.html")

    async def events() -> AsyncIterator[dict[str, str]]:
        async for _ in ticks(request, OVERVIEW_EVERY_S):
            ov = await reads.run(Reads.overview)
            yield {"event": "overview", "data": fragment.render(ov=ov)}

    return EventSourceResponse(events())


def points_since(reads: Reads, node_id: str, since: dict[str, int]) -> dict[str, Any]:
    """New chart points of a node since the last ones sent (reader thread)."""
    rows = reads.readings(node_id, since["readings"], 600)
    inferences = reads.inferences(node_id, since["node"], 600)
    if rows:
        since["readings"] = rows[-1].ts_ms
    if inferences:
        since["node"] = inferences[-1].ts_ms
    return {
        "readings": [[r.ts_ms, r.values] for r in rows],
        "node": [[i.ts_ms, i.score] for i in inferences],
    }


@router.get("/events/nodes/{node_id}")
async def node_events(
    request: Request,
    _s: Viewer,
    node_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$")],
    since_ms: int = 0,
) -> EventSourceResponse:
    reads: Reads = request.app.state.reads
    live = request.app.state.view.live
    every_s = request.app.state.cfg.web.live_interval_s

    async def events() -> AsyncIterator[dict[str, str]]:
        since = {"readings": since_ms, "node": since_ms, "gateway": since_ms}
        async for _ in ticks(request, every_s):
            data = await reads.run(lambda r: points_since(r, node_id, since))
            scores = live.since(node_id, ScoreSource.GATEWAY, since["gateway"])
            if scores:
                since["gateway"] = scores[-1][0]
            data["gateway"] = [list(p) for p in scores]
            if data["readings"] or data["node"] or data["gateway"]:
                yield {"event": "points", "data": json.dumps(data, separators=(",", ":"))}

    return EventSourceResponse(events())
