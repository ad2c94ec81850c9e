"""Server-sent events: the overview's tiles and a node's chart points, pushed while a page is open.

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
from sse_starlette.sse import EventSourceResponse

from dashboards import auth
from dashboards.data import Reads
from dashboards.templating import templates
from gateway.events import ScoreSource

router = APIRouter(include_in_schema=False)
Viewer = Annotated[auth.Session, Depends(auth.viewer)]
MAX_STREAM_S = 300.0
OVERVIEW_EVERY_S = 2.0


async def _ticks(request: Request, every_s: float) -> AsyncIterator[None]:
    deadline = time.monotonic() + MAX_STREAM_S
    while time.monotonic() < deadline and not await request.is_disconnected():
        yield
        await asyncio.sleep(every_s)


@router.get("/events/overview")
async def overview_events(request: Request, _s: Viewer) -> EventSourceResponse:
    reads: Reads = request.app.state.reads
    fragment = templates.get_template("_overview.html")

    async def events() -> AsyncIterator[dict[str, Any]]:
        async for _ in _ticks(request, OVERVIEW_EVERY_S):
            ov = await reads.run(Reads.overview)
            yield {"event": "overview", "data": fragment.render(ov=ov)}

    return EventSourceResponse(events(), ping=15)


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

    async def events() -> AsyncIterator[dict[str, Any]]:
        since = {"readings": since_ms, "node": since_ms, "gateway": since_ms}
        async for _ in _ticks(request, every_s):
            data = await reads.run(lambda r: points_since(r, node_id, since))
            scores = live.since(node_id, ScoreSource.GATEWAY, since["gateway"])
            if scores:
                since["gateway"] = scores[-1][0]
            data["gateway"] = [list(p) for p in scores]
            if data["readings"] or data["node"] or data["gateway"]:
                yield {"event": "points", "data": json.dumps(data, separators=(",", ":"))}

    return EventSourceResponse(events(), ping=15)
