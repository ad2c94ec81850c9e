"""Jinja2 templates and the filters the pages use (times, numbers, roles)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from dashboards.users import Role

templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


templates.env.filters["when"] = _when
templates.env.filters["ago"] = _ago
templates.env.filters["num"] = _num
templates.env.filters["duration"] = _duration
templates.env.globals["Role"] = Role


async def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a page with the signed-in user and the CSRF token in its context.

    Rendered on a worker thread: a table of 500 nodes takes tens of milliseconds to render,
    which on the event loop would delay ingest.
    """
    session = getattr(request.state, "session", None)
    context.setdefault("user", session.user if session else None)
    context.setdefault("csrf", session.csrf if session else "")
    context.setdefault("site", request.app.state.cfg.site)
    context.setdefault("request", request)
    template = templates.get_template(name)
    html = await asyncio.to_thread(template.render, context)
    return HTMLResponse(html, status_code=status_code)
