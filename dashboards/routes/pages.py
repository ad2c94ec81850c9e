"""The read-only pages: overview, nodes, one node (the Models page is in jobs_pages.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request

from dashboards import auth
from dashboards.data import Reads
from dashboards.scoring_view import describe_scoring
from dashboards.templating import page

router = APIRouter(include_in_schema=False)
Viewer = Annotated[auth.Session, Depends(auth.viewer)]
NodeId = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


def _reads(request: Request) -> Reads:
    reads: Reads = request.app.state.reads
    return reads


@router.get("/")
async def overview(request: Request, _s: Viewer) -> Any:
    ov = await _reads(request).run(Reads.overview)
    return await page(request, "overview.html", title="Overview", nav="overview", ov=ov)


@router.get("/nodes")
async def nodes(request: Request, _s: Viewer, status: str = "") -> Any:
    rows = await _reads(request).run(Reads.nodes)
    if status in ("ok", "warning", "silent"):
        rows = [n for n in rows if n.status == status]
    else:
        status = ""
    # Worst first: silent, then with alerts, then by name.
    order = {"silent": 0, "warning": 1, "ok": 2}
    rows.sort(key=lambda n: (order[n.status], n.node_id))
    return await page(request, "nodes.html", title="Nodes", nav="nodes", nodes=rows, filter=status)


@router.get("/nodes/{node_id}")
async def node(request: Request, _s: Viewer, node_id: NodeId) -> Any:
    detail = await _reads(request).run(lambda r: r.node(node_id))
    if detail is None:
        raise HTTPException(404, f"no node {node_id!r} has sent anything")
    state = request.app.state
    scored = state.view.live.latest_scores(node_id)  # on the loop, where it is fed
    return await page(
        request, "node.html", title=node_id, nav="nodes", d=detail,
        scoring=describe_scoring(scored, fusion_configured=state.cfg.scoring.fusion_rule_path is not None),
    )  # fmt: skip
