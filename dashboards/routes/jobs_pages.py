"""The Models page and its flash jobs: start one, watch it live, roll a node back.

A started job gets a page of its own (``/jobs/<n>``) that shows each node's phase, bytes and
result; with JavaScript it is updated over server-sent events until the job ends, without
it a reload shows the same state. Jobs run in :class:`dashboards.jobs.FlashJobs`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request
from fastapi.responses import RedirectResponse, Response

from dashboards import auth
from dashboards.actions import ActionError
from dashboards.data import Reads
from dashboards.routes.live import EventSourceResponse, ticks
from dashboards.templating import page, templates
from dashboards.users import Role

if TYPE_CHECKING:
    from dashboards.jobs import FlashJobs

router = APIRouter(include_in_schema=False)
Viewer = Annotated[auth.Session, Depends(auth.viewer)]
Operator = Annotated[auth.Session, Depends(auth.operator)]
JobId = Annotated[int, Path(ge=1, le=2**62)]
JOB_EVERY_S = 0.5
RECENT_JOBS = 10


def flash_jobs(request: Request) -> FlashJobs:
    jobs: FlashJobs | None = request.app.state.jobs
    if jobs is None:
        raise ActionError(503, "this dashboard was started without flash jobs")
    return jobs


async def heard_over(request: Request) -> dict[str, str]:
    """Node id -> the transport the gateway hears it over."""
    reads: Reads = request.app.state.reads
    return {n.node_id: n.transport for n in await reads.run(Reads.nodes)}


async def _models_page(
    request: Request, session: auth.Session, *, status: int = 200, flash: str = ""
) -> Any:
    state = request.app.state
    rows, held = await state.reads.run(lambda r: (r.nodes(), r.artifacts()))
    jobs: FlashJobs | None = state.jobs
    reach = await jobs.reach({n.node_id: n.transport for n in rows}) if jobs else {}
    recent = await jobs.jobs(RECENT_JOBS) if jobs else []
    summary = {
        k: v
        for k, v in state.cfg.scoring.model_dump(mode="json").items()
        if isinstance(v, str | int | float | bool) or v is None
    }
    return await page(
        request, "models.html", status, title="Models", nav="models", nodes=rows,
        scoring=summary, artifacts=held, reach=reach,
        jobs=recent, running=jobs.current if jobs else None,
        can_act=session.user.role >= Role.OPERATOR and jobs is not None,
        flash=flash, flash_kind="bad",
    )  # fmt: skip


@router.get("/models")
async def models(request: Request, s: Viewer) -> Any:
    return await _models_page(request, s)


@router.post("/models/jobs")
async def start_flash(
    request: Request,
    s: Operator,
    artifact: Annotated[str, Form(max_length=64)] = "",
    nodes: Annotated[list[str] | None, Form()] = None,
) -> Response:
    try:
        job = await flash_jobs(request).start_flash(
            s.user.name, artifact, nodes or [], await heard_over(request)
        )
    except ActionError as exc:
        return await _models_page(request, s, status=exc.status, flash=exc.message)
    # Post/redirect/get: a reload of the job page does not start it again.
    return RedirectResponse(f"/jobs/{job.job_id}", status_code=303)


@router.post("/models/rollback")
async def rollback(
    request: Request, s: Operator, node_id: Annotated[str, Form(max_length=64)] = ""
) -> Response:
    try:
        job = await flash_jobs(request).start_rollback(
            s.user.name, [node_id], await heard_over(request)
        )
    except ActionError as exc:
        return await _models_page(request, s, status=exc.status, flash=exc.message)
    return RedirectResponse(f"/jobs/{job.job_id}", status_code=303)


@router.get("/jobs/{job_id}")
async def job_page(request: Request, _s: Viewer, job_id: JobId) -> Any:
    jobs: FlashJobs | None = request.app.state.jobs
    job = await jobs.get(job_id) if jobs else None
    if job is None:
        raise HTTPException(404, f"no flash job {job_id}")
    return await page(request, "job.html", title=f"Job {job_id}", nav="models", job=job)


@router.get("/events/jobs/{job_id}")
async def job_events(request: Request, _s: Viewer, job_id: JobId) -> EventSourceResponse:
    jobs: FlashJobs | None = request.app.state.jobs
    fragment = templates.get_template("_job.html")

    async def events() -> AsyncIterator[dict[str, str]]:
        last = ""
        async for _ in ticks(request, JOB_EVERY_S):
            job = await jobs.get(job_id) if jobs else None
            if job is None:
                break
            # Rendered here, not on a thread: the running job is changed on this loop, and
            # its fragment is a small table.
            html = fragment.render(job=job)
            if html != last:
                last = html
                yield {"event": "job", "data": html}
            if not job.running:
                yield {"event": "done", "data": ""}  # sse-close: the page stops listening
                break

    return EventSourceResponse(events())
