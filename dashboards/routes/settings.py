"""Settings and about: versions, a config summary with secrets hidden, users (admins)."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sqlite3
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from dashboards import auth
from dashboards.templating import page
from dashboards.users import Role, UserError

router = APIRouter(include_in_schema=False)
Viewer = Annotated[auth.Session, Depends(auth.viewer)]
Admin = Annotated[auth.Session, Depends(auth.admin)]
SECRET_WORDS = ("password", "secret", "token", "key")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    return {
        "fieldgate": _version("fieldgate"),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "FastAPI": _version("fastapi"),
        "uvicorn": _version("uvicorn"),
        "Platform": platform.platform(terse=True),
    }


def redact(value: Any, key: str = "") -> Any:
    """The config as plain data with every secret-looking value replaced."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if value not in (None, "") and any(w in key.lower() for w in SECRET_WORDS):
        return "********"
    if isinstance(value, str) and "://" in value and "@" in value:
        scheme, rest = value.split("://", 1)
        return f"{scheme}://********@{rest.rsplit('@', 1)[1]}"  # credentials in a URL
    return value


@router.get("/settings")
async def settings_page(request: Request, s: Viewer) -> Any:
    state = request.app.state
    cfg = state.cfg
    is_admin = s.user.role >= Role.ADMIN
    users, audit, config_text = [], [], ""
    if is_admin:
        users = await state.run_users(lambda u: u.all())
        audit = await state.run_users(lambda u: u.audit_log(50))
        config_text = json.dumps(redact(cfg.model_dump(mode="json")), indent=2)
    metrics_url = None
    if cfg.metrics.enabled:
        host = request.url.hostname or cfg.metrics.host
        metrics_url = f"http://{host}:{cfg.metrics.port}/metrics"
    return await page(
        request, "settings.html", title="Settings", nav="settings", versions=versions(),
        is_admin=is_admin, users=users, audit=audit, config_text=config_text, metrics_url=metrics_url,
    )  # fmt: skip


@router.post("/settings/users")
async def add_user(
    request: Request,
    s: Admin,
    name: Annotated[str, Form(max_length=32)],
    role: Annotated[str, Form(max_length=16)],
    password: Annotated[str, Form(max_length=256)],
) -> Response:
    state = request.app.state
    try:
        role_value = Role[role.upper()]
        await state.run_users(lambda u: u.add(name, role_value, password, must_change=True))
    except (KeyError, UserError) as exc:
        message = str(exc) if isinstance(exc, UserError) else f"unknown role {role!r}"
        return await page(request, "error.html", 400, title="User not added", message=message)
    await state.run_users(
        lambda u: u.audit(s.user.name, "user.create", name, role_value.name.lower())
    )
    return RedirectResponse("/settings", status_code=303)
