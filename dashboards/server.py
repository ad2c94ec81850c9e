"""Serve the dashboard inside the gateway's event loop (uvicorn's Server API).

Started by ``gateway/app.py`` as the named task ``web:dashboard``. The gateway owns SIGTERM
and SIGINT, so uvicorn's own signal capture is turned off; cancelling the task stops the
server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn

from dashboards import actions
from dashboards.app import create_app
from dashboards.job_store import JobStore, jobs_db_path
from dashboards.jobs import FlashJobs
from dashboards.tls import ensure_certificate
from dashboards.users import UserStore, ensure_admin, web_db_path
from dashboards.view import GatewayView

_LOGGER = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The gateway's run_until_signalled handles the signals and cancels us.
        yield


def open_users(view: GatewayView) -> UserStore:
    """The user store; on the very first start, an ``admin`` with a logged one-time password."""
    users = UserStore(web_db_path(view.config.data_dir))
    password = ensure_admin(users)
    if password is not None:
        # The one place a secret is logged, on purpose: it is how the first admin gets in,
        # and it must be changed at the first sign-in.
        _LOGGER.warning(
            "dashboard: first start: created user 'admin' with one-time password %s"
            " (change it at first sign-in; `fieldgate users passwd admin` resets it)",
            password,
        )
    return users


def dashboard_url(view: GatewayView, port: int | None = None) -> str:
    web = view.config.web
    host = web.host if web.host not in ("0.0.0.0", "::", "") else "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if web.tls else 'http'}://{host}:{port or web.port}/"


async def serve_dashboard(view: GatewayView, ready: asyncio.Event | None = None) -> None:
    """Run the dashboard until cancelled; ``ready`` is set once it accepts connections."""
    cfg = view.config
    web = cfg.web
    users = await asyncio.to_thread(open_users, view)
    job_store = await asyncio.to_thread(JobStore, jobs_db_path(cfg.data_dir))
    if job_store.interrupted:
        _LOGGER.warning(
            "dashboard: %d flash job(s) were interrupted by the last stop", job_store.interrupted
        )
    jobs = FlashJobs(cfg, job_store, users)
    ssl: dict[str, str] = {}
    if web.tls:
        cert, key = await asyncio.to_thread(
            ensure_certificate, cfg.data_dir / "web", web.allowed_hosts
        )
        ssl = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    app = create_app(cfg, view, users, jobs)
    config = uvicorn.Config(
        app, host=web.host, port=web.port, log_config=None, access_log=False,
        server_header=False, proxy_headers=False, lifespan="on", timeout_graceful_shutdown=1,
        **ssl,  # type: ignore[arg-type]
    )  # fmt: skip
    server = _EmbeddedServer(config)
    try:
        # serve() split into its public steps, so that cancelling this task (gateway
        # shutdown) still closes the listener and the open streams (within 1 s).
        config.load()
        server.lifespan = config.lifespan_class(config)
        await server.startup()
        if server.should_exit:
            raise OSError(f"dashboard: cannot serve on {web.host}:{web.port}")
        port = server.servers[0].sockets[0].getsockname()[1] if server.servers else web.port
        view.bound_port.append(port)
        restored = await actions.restore_silences(view, users) if await _engine_ready(view) else 0
        _LOGGER.info(
            "dashboard: serving %s (%d maintenance windows restored)",
            dashboard_url(view, port),
            restored,
        )
        if ready is not None:
            ready.set()
        try:
            async with asyncio.TaskGroup() as tg:
                runner = tg.create_task(jobs.run(), name="web:flash-jobs")
                await server.main_loop()
                runner.cancel()
        finally:
            server.should_exit = True
            await server.shutdown()
    finally:
        await asyncio.to_thread(job_store.close)
        await asyncio.to_thread(users.close)


async def _engine_ready(view: GatewayView) -> bool:
    try:
        async with asyncio.timeout(10):
            await view.engine_ready()
    except TimeoutError:
        _LOGGER.warning("dashboard: alert engine not ready; maintenance windows not restored")
        return False
    return True
