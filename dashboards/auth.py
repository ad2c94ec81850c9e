"""Who is asking, and may they: sessions, API tokens, CSRF, roles, login throttling.

* Sessions live in memory (a gateway restart logs everyone out, which is acceptable on a
  site LAN and leaves nothing to steal on disk). The cookie carries only a random id;
  ``HttpOnly``, ``SameSite=Strict``, ``Secure`` when served over TLS.
* Every state change needs the session's CSRF token (form field ``csrf`` or header
  ``X-CSRF-Token``). API tokens (``Authorization: Bearer fgt_...``) carry no ambient
  authority, so requests made with one need no CSRF token.
* Roles are checked on the server for every route by :func:`require`.
* Bad logins are counted per client address and per user name over a sliding minute; past
  ``limit`` the login is refused with 429 before any password is checked.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import Request

from dashboards.users import Role, User

SESSION_COOKIE = "fg_session"
LOGIN_CSRF_COOKIE = "fg_login"
MAX_SESSIONS = 1000
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class NotAuthenticated(Exception):
    """No valid session or token: pages redirect to the login, the API answers 401."""


class Forbidden(Exception):
    """Authenticated, but the role does not allow this (403)."""


class CsrfRejected(Exception):
    """A state change without the session's CSRF token (403)."""


class PasswordChangeRequired(Exception):
    """The one-time setup password is still in use: only the password page is allowed."""


@dataclass
class Session:
    user: User
    csrf: str
    expires: float
    via_token: bool = False


@dataclass
class Sessions:
    ttl_s: float
    _by_id: dict[str, Session] = field(default_factory=dict)

    def create(self, user: User) -> tuple[str, Session]:
        if len(self._by_id) >= MAX_SESSIONS:
            self._expire(force=True)
        sid = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), time.monotonic() + self.ttl_s)
        self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        now = time.monotonic()
        if session.expires < now:
            del self._by_id[sid]
            return None
        session.expires = now + self.ttl_s  # idle timeout
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def drop_user(self, name: str) -> None:
        for sid in [s for s, v in self._by_id.items() if v.user.name == name]:
            del self._by_id[sid]

    def _expire(self, *, force: bool) -> None:
        now = time.monotonic()
        for sid in [s for s, v in self._by_id.items() if v.expires < now]:
            del self._by_id[sid]
        if force and len(self._by_id) >= MAX_SESSIONS:
            oldest = min(self._by_id, key=lambda s: self._by_id[s].expires)
            del self._by_id[oldest]


class LoginThrottle:
    """Bad logins per key (client address, user name) over the last ``window_s``."""

    def __init__(self, limit: int, window_s: float = 60.0, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}
        self.throttled = 0

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            if len(self._failures) >= self._max_keys:
                self._failures.clear()  # bounded; a flood resets counts rather than memory
            times = self._failures[key] = deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def blocked(self, *keys: str) -> float:
        """Seconds to wait, or 0 when a login attempt may be checked now."""
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            times = self._recent(key, now)
            if len(times) >= self.limit:
                wait = max(wait, times[0] + self.window_s - now)
        if wait:
            self.throttled += 1
        return wait

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        for key in keys:
            self._recent(key, now).append(now)

    def succeeded(self, user_key: str) -> None:
        self._failures.pop(user_key, None)


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def client_key(request: Request) -> str:
    return "ip:" + (request.client.host if request.client else "?")


async def _form_csrf(request: Request) -> str | None:
    header = request.headers.get("x-csrf-token")
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get("csrf")
        return value if isinstance(value, str) else None
    return None


def require(
    role: Role, *, allow_password_change: bool = False
) -> Callable[[Request], Awaitable[Session]]:
    """A FastAPI dependency: the caller's session if its role is at least ``role``.

    Also enforces CSRF on unsafe methods for cookie sessions.
    """

    async def dependency(request: Request) -> Session:
        state = request.app.state
        session: Session | None = None
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
            user = await state.run_users(lambda users: users.token_user(token))
            if user is not None:
                session = Session(user, "", 0.0, via_token=True)
        else:
            session = state.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise NotAuthenticated
        if session.user.must_change and not allow_password_change:
            raise PasswordChangeRequired
        if session.user.role < role:
            raise Forbidden
        if (
            request.method in UNSAFE_METHODS
            and not session.via_token
            and not csrf_ok(session.csrf, await _form_csrf(request))
        ):
            raise CsrfRejected
        request.state.session = session
        return session

    return dependency


viewer = require(Role.VIEWER)
operator = require(Role.OPERATOR)
admin = require(Role.ADMIN)
