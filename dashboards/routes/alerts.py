"""The alerts page and what operators do there: acknowledge, clear, silence a node."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from dashboards import actions, auth
from dashboards.data import Reads, now_ms
from dashboards.templating import page
from dashboards.users import Role

router = APIRouter(include_in_schema=False)
Viewer = Annotated[auth.Session, Depends(auth.viewer)]
Operator = Annotated[auth.Session, Depends(auth.operator)]
# A page of 500 alert forms helps no one on a phone; the rest are in the API and the count.
MAX_OPEN_SHOWN = 100


async def _render(
    request: Request,
    session: auth.Session,
    *,
    status: int = 200,
    flash: str = "",
    bad: bool = False,
) -> Any:
    state = request.app.state
    reads: Reads = state.reads

    def collect(r: Reads) -> tuple[Any, Any, Any]:
        return r.open_alerts(), r.alert_history(100)[::-1], [n.node_id for n in r.nodes()]

    open_alerts, history, node_ids = await reads.run(collect)
    silences = await asyncio.to_thread(state.users.silences, active_at_ms=now_ms())
    return await page(
        request, "alerts.html", status, title="Alerts", nav="alerts", open=open_alerts[:MAX_OPEN_SHOWN],
        open_total=len(open_alerts),
        history=history, node_ids=node_ids, silences=silences,
        can_act=session.user.role >= Role.OPERATOR, flash=flash, flash_kind="bad" if bad else "ok",
    )  # fmt: skip


@router.get("/alerts")
async def alerts_page(request: Request, s: Viewer) -> Any:
    return await _render(request, s)


async def _act(request: Request, s: auth.Session, coro: Any, done: str) -> Response:
    try:
        await coro
        await request.app.state.reads.run(Reads.forget)
    except actions.ActionError as exc:
        return await _render(request, s, status=exc.status, flash=exc.message, bad=True)
    # Post/redirect/get: a reload does not repeat the action.
    return RedirectResponse(f"/alerts?done={done}", status_code=303)


@router.post("/alerts/ack")
async def acknowledge(
    request: Request,
    s: Operator,
    alert_id: Annotated[str, Form(max_length=200)],
    comment: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    st = request.app.state
    return await _act(
        request, s, actions.acknowledge(st.view, st.users, s.user.name, alert_id, comment), "ack"
    )


@router.post("/alerts/clear")
async def clear(
    request: Request,
    s: Operator,
    alert_id: Annotated[str, Form(max_length=200)],
    comment: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    st = request.app.state
    return await _act(
        request, s, actions.clear(st.view, st.users, s.user.name, alert_id, comment), "clear"
    )


@router.post("/silences")
async def silence(
    request: Request,
    s: Operator,
    node_id: Annotated[str, Form(max_length=64)],
    minutes: Annotated[int, Form()],
    reason: Annotated[str, Form(max_length=200)],
) -> Response:
    st = request.app.state
    return await _act(
        request,
        s,
        actions.silence(st.view, st.users, s.user.name, node_id, minutes=minutes, reason=reason),
        "silence",
    )
