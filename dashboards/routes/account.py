"""Signing in and out, and changing one's password."""

from __future__ import annotations

import logging
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from dashboards import auth
from dashboards.templating import page
from dashboards.users import UserError

_LOGGER = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)


def _safe_next(target: str) -> str:
    # Only same-site paths: no open redirect to another host.
    return target if target.startswith("/") and not target.startswith("//") else "/"


async def _login_page(
    request: Request, *, status: int = 200, error: str = "", username: str = "", next_: str = "/"
) -> Response:
    token = secrets.token_urlsafe(24)
    response: Response = await page(
        request, "login.html", status, title="Sign in", login_csrf=token, error=error,
        username=username, next=_safe_next(next_), site=request.app.state.cfg.site,
    )  # fmt: skip
    response.set_cookie(
        auth.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
        secure=request.app.state.tls, path="/login",
    )  # fmt: skip
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> Response:
    return await _login_page(request, next_=next)


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    csrf: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    state = request.app.state
    if not auth.csrf_ok(request.cookies.get(auth.LOGIN_CSRF_COOKIE, ""), csrf):
        return await _login_page(
            request,
            status=403,
            error="The sign-in form expired. Try again.",
            username=username,
            next_=next,
        )
    keys = (auth.client_key(request), "user:" + username.lower())
    wait = state.throttle.blocked(*keys)
    if wait:
        _LOGGER.warning("dashboard: login throttled for %r from %s", username, keys[0])
        response = await _login_page(
            request,
            status=429,
            error=f"Too many failed sign-ins. Wait {wait:.0f} s and try again.",
            username=username,
            next_=next,
        )
        response.headers["retry-after"] = str(max(1, round(wait)))
        return response
    user = await state.run_users(lambda users: users.verify(username, password))
    if user is None:
        state.throttle.failed(*keys)
        _LOGGER.warning("dashboard: failed login for %r from %s", username, keys[0])
        return await _login_page(
            request, status=401, error="Wrong user name or password.", username=username, next_=next
        )
    state.throttle.succeeded(keys[1])
    sid, _session = state.sessions.create(user)
    await state.run_users(lambda users: users.audit(user.name, "login", auth.client_key(request)))
    _LOGGER.info("dashboard: %s signed in from %s", user.name, keys[0])
    target = "/account/password" if user.must_change else _safe_next(next)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE, sid, httponly=True, samesite="strict", secure=state.tls, path="/",
        max_age=int(state.cfg.web.session_ttl_s),
    )  # fmt: skip
    response.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(
    request: Request,
    _s: Annotated[
        auth.Session, Depends(auth.require(auth.Role.VIEWER, allow_password_change=True))
    ],
) -> Response:
    request.app.state.sessions.drop(request.cookies.get(auth.SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


_any_role = auth.require(auth.Role.VIEWER, allow_password_change=True)


@router.get("/account/password")
async def password_form(request: Request, s: Annotated[auth.Session, Depends(_any_role)]) -> Any:
    return await page(
        request, "password.html", title="Change password", site=request.app.state.cfg.site
    )


@router.post("/account/password")
async def change_password(
    request: Request,
    s: Annotated[auth.Session, Depends(_any_role)],
    current: Annotated[str, Form(max_length=256)],
    new: Annotated[str, Form(max_length=256)],
    again: Annotated[str, Form(max_length=256)],
) -> Any:
    state = request.app.state
    name = s.user.name
    error = ""
    if new != again:
        error = "The two new passwords differ."
    elif new == current:
        error = "Choose a password different from the current one."
    elif await state.run_users(lambda users: users.verify(name, current)) is None:
        error = "The current password is wrong."
    else:
        try:
            await state.run_users(lambda users: users.set_password(name, new))
        except UserError as exc:
            error = str(exc)
    if error:
        return await page(
            request, "password.html", 400, title="Change password", error=error, site=state.cfg.site
        )
    await state.run_users(lambda users: users.audit(name, "user.passwd", name))
    state.sessions.drop_user(name)  # every other session of this user ends too
    return RedirectResponse("/login", status_code=303)
