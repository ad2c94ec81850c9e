"""The dashboard's ASGI app: :func:`create_app` wires pages, the JSON API and live streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from dashboards import auth
from dashboards.data import Reads
from dashboards.headers import HostAllowList, SecurityHeaders
from dashboards.routes import account, alerts, api, api_jobs, jobs_pages, live, pages, settings
from dashboards.templating import page
from dashboards.users import UserStore
from dashboards.view import GatewayView
from gateway.config import GatewayConfig

if TYPE_CHECKING:
    from dashboards.jobs import FlashJobs

_LOGGER = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
T = TypeVar("T")


def create_app(
    cfg: GatewayConfig, view: GatewayView, users: UserStore, jobs: FlashJobs | None = None
) -> Any:
    """The dashboard for ``view`` (a running gateway) with its users in ``users``.

    ``jobs`` runs flash jobs (its :meth:`~dashboards.jobs.FlashJobs.run` started by the
    caller); without it the Models page lists models but cannot flash them.

    Returns the ASGI app with the Host allow-list and security headers in front.
    """
    reads = Reads(view)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(reads.close)

    app = FastAPI(
        title="fieldgate dashboard API",
        version="1",
        description="Read the gateway's nodes, readings, alerts and models; act on alerts. "
        "Authenticate with a session cookie (and X-CSRF-Token for changes) or "
        "`Authorization: Bearer <token>` (`fieldgate users token NAME`).",
        # The interactive docs page loads its scripts from a CDN (blocked by our CSP, and
        # nothing is fetched at run time); the schema itself is served below, signed in.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.cfg = cfg
    app.state.view = view
    app.state.reads = reads
    app.state.users = users
    app.state.jobs = jobs
    app.state.sessions = auth.Sessions(cfg.web.session_ttl_s)
    app.state.throttle = auth.LoginThrottle(cfg.web.login_attempts_per_minute)
    app.state.tls = cfg.web.tls

    async def run_users(fn: Callable[[UserStore], T]) -> T:
        return await asyncio.to_thread(fn, users)

    app.state.run_users = run_users

    _install_error_pages(app)

    @app.get("/api/openapi.json", include_in_schema=False)
    async def openapi(_s: Annotated[auth.Session, Depends(auth.viewer)]) -> JSONResponse:
        return JSONResponse(app.openapi())

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (account, pages, jobs_pages, alerts, settings, live, api, api_jobs):
        app.include_router(module.router)
    return HostAllowList(SecurityHeaders(app, tls=cfg.web.tls), allowed=cfg.web.allowed_hosts)


def _install_error_pages(app: FastAPI) -> None:
    """Refusals as the caller can use them: JSON for the API, a page or redirect otherwise."""

    @app.exception_handler(auth.NotAuthenticated)
    async def _anonymous(request: Request, _exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "authentication required"}, status_code=401)
        target = request.url.path
        return RedirectResponse(f"/login?next={target}", status_code=303)

    @app.exception_handler(auth.PasswordChangeRequired)
    async def _must_change(request: Request, _exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "change the one-time password first"}, status_code=403)
        return RedirectResponse("/account/password", status_code=303)

    @app.exception_handler(auth.Forbidden)
    async def _forbidden(request: Request, _exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "your role does not allow this"}, status_code=403)
        message = "Your role does not allow this page or action."
        return await page(request, "error.html", 403, title="Not allowed", message=message)

    @app.exception_handler(auth.CsrfRejected)
    async def _csrf(request: Request, _exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "missing or wrong CSRF token"}, status_code=403)
        message = "The form was stale or not ours (CSRF). Reload the page and try again."
        return await page(request, "error.html", 403, title="Refused", message=message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path.startswith(("/api/", "/static/", "/events/")):
            return await http_exception_handler(request, exc)
        title = "Not found" if exc.status_code == 404 else f"Error {exc.status_code}"
        return await page(
            request, "error.html", exc.status_code, title=title, message=str(exc.detail)
        )
