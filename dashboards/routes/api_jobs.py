"""Flash jobs in the JSON API: list them, read one, start one, roll nodes back.

Same roles as the Models page: viewers read, operators and admins start. A job runs in the
gateway (:mod:`dashboards.jobs`); starting answers at once with the job, whose ``state`` is
``running`` until every node has a result (poll ``GET /api/jobs/{job_id}``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from dashboards import auth
from dashboards.actions import ActionError
from dashboards.job_store import MAX_JOBS, Job
from dashboards.jobs import MAX_NODES_PER_JOB
from dashboards.routes.jobs_pages import flash_jobs, heard_over

Viewer = Annotated[auth.Session, Depends(auth.viewer)]
Operator = Annotated[auth.Session, Depends(auth.operator)]
JobId = Annotated[int, Path(ge=1, le=2**62)]
NodeId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Not signed in"},
    403: {"description": "Role too low, or CSRF token missing"},
}
_START_ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "No such signed artifact or node"},
    409: {
        "description": "A job is running, a node cannot be reached, or the model fails its checks"
    },
    503: {"description": "Flash jobs are not running"},
}
router = APIRouter(prefix="/api", tags=["jobs"], responses=_ERRORS)


class NodeResultOut(BaseModel):
    outcome: str = Field(
        description="flash: flashed, already_current, refused, rolled_back (failed its "
        "self-test, runs its old model), unreachable, failed; rollback: reverted, refused, "
        "unreachable, failed; interrupted when the gateway stopped"
    )
    ok: bool
    reason: str = Field(description="what went wrong and what to do; empty when ok")
    old_version: str | None
    new_version: str | None
    bytes_sent: int
    seconds: float
    attempts: int


class JobNodeOut(BaseModel):
    node_id: str
    transport: str
    phase: str = Field(description="queued, info, upload, activate, retry ..., finished")
    bytes_done: int
    bytes_total: int
    result: NodeResultOut | None


class JobOut(BaseModel):
    job_id: int
    kind: Literal["flash", "rollback"]
    state: Literal["running", "done", "interrupted"]
    ok: bool | None = Field(description="null while running; true when every node ended well")
    who: str
    model: str
    artifact_sha256: str | None
    started_ms: int
    finished_ms: int | None
    error: str = Field(description="why the job stopped before reaching its nodes, if it did")
    nodes: list[JobNodeOut]


class FlashIn(BaseModel):
    artifact_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="a signed artifact's sha256 from GET /api/models"
    )
    nodes: list[NodeId] = Field(min_length=1, max_length=MAX_NODES_PER_JOB)


class RollbackIn(BaseModel):
    nodes: list[NodeId] = Field(min_length=1, max_length=MAX_NODES_PER_JOB)


def _out(job: Job) -> JobOut:
    return JobOut(
        job_id=job.job_id, kind=job.kind, state=job.state, ok=job.ok,
        who=job.who, model=job.model, artifact_sha256=job.artifact_sha256,
        started_ms=job.started_ms, finished_ms=job.finished_ms, error=job.error,
        nodes=[
            JobNodeOut(
                node_id=n.node_id, transport=n.transport, phase=n.phase,
                bytes_done=n.bytes_done, bytes_total=n.bytes_total,
                result=None if n.result is None else NodeResultOut(
                    outcome=n.result.outcome, ok=n.result.ok, reason=n.result.reason,
                    old_version=n.result.old_version, new_version=n.result.new_version,
                    bytes_sent=n.result.bytes_sent, seconds=n.result.seconds,
                    attempts=n.result.attempts,
                ),
            )
            for n in job.nodes
        ],
    )  # fmt: skip


@router.get("/jobs")
async def jobs(
    request: Request, _s: Viewer, limit: Annotated[int, Query(ge=1, le=MAX_JOBS)] = 20
) -> list[JobOut]:
    """Flash and rollback jobs, newest first."""
    found = await request.app.state.jobs.jobs(limit) if request.app.state.jobs else []
    return [_out(j) for j in found]


@router.get("/jobs/{job_id}", responses={404: {"description": "No such job"}})
async def job(request: Request, _s: Viewer, job_id: JobId) -> JobOut:
    found = await request.app.state.jobs.get(job_id) if request.app.state.jobs else None
    if found is None:
        raise HTTPException(404, f"no flash job {job_id}")
    return _out(found)


@router.post("/jobs", status_code=202, responses=_START_ERRORS)
async def start_flash(request: Request, s: Operator, body: FlashIn) -> JobOut:
    """Start flashing a signed artifact the gateway holds onto nodes (one job at a time)."""
    try:
        started = await flash_jobs(request).start_flash(
            s.user.name, body.artifact_sha256, body.nodes, await heard_over(request)
        )
    except ActionError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return _out(started)


@router.post("/jobs/rollback", status_code=202, responses=_START_ERRORS)
async def start_rollback(request: Request, s: Operator, body: RollbackIn) -> JobOut:
    """Start making nodes run their previous (confirmed) model again."""
    try:
        started = await flash_jobs(request).start_rollback(
            s.user.name, body.nodes, await heard_over(request)
        )
    except ActionError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return _out(started)
