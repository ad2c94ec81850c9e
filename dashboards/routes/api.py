"""The JSON API under /api: nodes, readings, alerts, models, health; OpenAPI at /api/openapi.json.

Same roles as the pages. A session cookie works (state changes then need ``X-CSRF-Token``),
and so does ``Authorization: Bearer <token>`` for scripts.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, TypeAdapter

from dashboards import actions, auth
from dashboards.data import NodeInfo, Reads
from gateway.events import Alert, AlertEvent, AlertState

Viewer = Annotated[auth.Session, Depends(auth.viewer)]
Operator = Annotated[auth.Session, Depends(auth.operator)]
NodeId = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
AlertId = Annotated[str, Path(max_length=200)]
_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Not signed in"},
    403: {"description": "Role too low, or CSRF token missing"},
}
router = APIRouter(prefix="/api", tags=["api"], responses=_ERRORS)


class NodeOut(BaseModel):
    node_id: str
    status: Literal["ok", "warning", "silent"]
    transport: str
    last_seen_ms: int
    age_s: float
    rssi_dbm: int | None
    battery_mv: int | None
    firmware_version: str | None
    model: str | None
    completeness: float
    lost: int
    reboots: int
    open_alerts: int
    gateway_score: float | None
    node_score: float | None


class ReadingOut(BaseModel):
    ts_ms: int
    values: dict[str, float] = Field(description="channel name -> value")


class ScoreOut(BaseModel):
    ts_ms: int
    score: float = Field(description="node-model score in threshold units (>= 1.0: anomalous)")


class ReadingsOut(BaseModel):
    node_id: str
    readings: list[ReadingOut]
    node_scores: list[ScoreOut]


class AlertOut(BaseModel):
    alert_id: str
    rule: str
    node_id: str
    severity: Literal["info", "warning", "critical"]
    state: Literal["raised", "acknowledged", "cleared"]
    message: str
    value: float | None
    raised_at_ms: int
    acked_at_ms: int | None
    acked_by: str | None
    ack_comment: str | None
    cleared_at_ms: int | None
    escalations: int


class AlertEventOut(BaseModel):
    event_id: str
    kind: str
    at_ms: int
    alert: AlertOut


class Comment(BaseModel):
    comment: str = Field("", max_length=200)


class SilenceIn(BaseModel):
    node_id: str = Field(pattern=r"^[A-Za-z0-9._*-]{1,64}$")
    minutes: int = Field(ge=1, le=actions.MAX_SILENCE_MIN)
    reason: str = Field(min_length=1, max_length=200)


class SilenceOut(BaseModel):
    node_id: str
    start_ms: int
    end_ms: int
    who: str
    reason: str


class ModelOut(BaseModel):
    path: str
    name: str
    version: str | None
    size_bytes: int
    sha256: str
    in_use: bool = Field(description="the gateway's scoring model")
    signed: bool
    sequence: int | None
    target: str | None
    key_id: str | None
    created_at: str | None
    verified: str


class HealthOut(BaseModel):
    healthy: bool
    nodes: int
    open_alerts: int
    uptime_s: float


def _node(n: NodeInfo) -> NodeOut:
    return NodeOut(**asdict(n))


def _alert(a: Alert) -> AlertOut:
    return AlertOut(
        alert_id=a.alert_id, rule=a.rule, node_id=a.node_id, severity=a.severity.name.lower(),
        state=a.state.value, message=a.message, value=a.value, raised_at_ms=a.raised_at_ms,
        acked_at_ms=a.acked_at_ms, acked_by=a.acked_by, ack_comment=a.ack_comment,
        cleared_at_ms=a.cleared_at_ms, escalations=a.escalations,
    )  # fmt: skip


def _event(e: AlertEvent) -> AlertEventOut:
    return AlertEventOut(
        event_id=e.event_id, kind=e.kind.value, at_ms=e.at_ms, alert=_alert(e.alert)
    )


def _reads(request: Request) -> Reads:
    reads: Reads = request.app.state.reads
    return reads


@router.get("/health")
async def health(request: Request, _s: Viewer) -> HealthOut:
    ov = await _reads(request).run(Reads.overview)
    return HealthOut(
        healthy=ov.healthy, nodes=ov.ok + ov.warning + ov.silent,
        open_alerts=len(ov.open_alerts), uptime_s=ov.system.uptime_s,
    )  # fmt: skip


_NODE_LIST = TypeAdapter(list[NodeInfo])


@router.get("/nodes", response_model=list[NodeOut])
async def nodes(request: Request, _s: Viewer) -> Response:
    # 500 nodes take tens of milliseconds to serialise: done on the reader thread, not the loop.
    body = await _reads(request).run(lambda r: _NODE_LIST.dump_json(r.nodes()))
    return Response(body, media_type="application/json")


@router.get("/nodes/{node_id}", responses={404: {"description": "Unknown node"}})
async def node(request: Request, _s: Viewer, node_id: NodeId) -> NodeOut:
    found = [n for n in await _reads(request).run(Reads.nodes) if n.node_id == node_id]
    if not found:
        raise HTTPException(404, f"no node {node_id!r} has sent anything")
    return _node(found[0])


@router.get("/nodes/{node_id}/readings")
async def readings(
    request: Request,
    _s: Viewer,
    node_id: NodeId,
    since_ms: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 300,
) -> ReadingsOut:
    rows, scores = await _reads(request).run(
        lambda r: (r.readings(node_id, since_ms, limit), r.inferences(node_id, since_ms, limit))
    )
    return ReadingsOut(
        node_id=node_id,
        readings=[ReadingOut(ts_ms=row.ts_ms, values=row.values) for row in rows],
        node_scores=[ScoreOut(ts_ms=i.ts_ms, score=i.score) for i in scores],
    )


@router.get("/alerts")
async def alerts(
    request: Request,
    _s: Viewer,
    state: Literal["raised", "acknowledged", "cleared"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AlertOut]:
    wanted = AlertState(state) if state else None
    return [_alert(a) for a in await _reads(request).run(lambda r: r.alerts(wanted, limit))]


@router.get("/alerts/history")
async def alert_history(
    request: Request, _s: Viewer, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[AlertEventOut]:
    return [_event(e) for e in await _reads(request).run(lambda r: r.alert_history(limit))]


async def _do(request: Request, coro: object) -> AlertOut:
    try:
        alert: Alert = await coro  # type: ignore[misc]
    except actions.ActionError as exc:
        raise HTTPException(exc.status, exc.message) from None
    await _reads(request).run(Reads.forget)
    return _alert(alert)


_ACT_ERRORS: dict[int | str, dict[str, str]] = {
    409: {"description": "Not open, or already acknowledged"},
    503: {"description": "Alert engine not running yet"},
}


@router.post("/alerts/{alert_id}/acknowledge", responses=_ACT_ERRORS)
async def acknowledge(request: Request, s: Operator, alert_id: AlertId, body: Comment) -> AlertOut:
    st = request.app.state
    return await _do(
        request, actions.acknowledge(st.view, st.users, s.user.name, alert_id, body.comment)
    )


@router.post("/alerts/{alert_id}/clear", responses=_ACT_ERRORS)
async def clear(request: Request, s: Operator, alert_id: AlertId, body: Comment) -> AlertOut:
    st = request.app.state
    return await _do(request, actions.clear(st.view, st.users, s.user.name, alert_id, body.comment))


@router.post("/silences", responses={503: {"description": "Alert engine not running yet"}})
async def silence(request: Request, s: Operator, body: SilenceIn) -> SilenceOut:
    st = request.app.state
    try:
        record = await actions.silence(
            st.view, st.users, s.user.name, body.node_id, minutes=body.minutes, reason=body.reason
        )
    except actions.ActionError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return SilenceOut(**asdict(record))


@router.get("/models")
async def models(request: Request, _s: Viewer) -> list[ModelOut]:
    """The model artifacts the gateway holds, with their signed manifests."""
    return [ModelOut(**asdict(a)) for a in await _reads(request).run(Reads.artifacts)]
