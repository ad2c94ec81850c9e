"""Real receivers on loopback for the internet-side outputs: an aiohttp web server for
the webhook and an aiosmtpd SMTP relay, both in the test's event loop, both able to be
"unreachable" (not listening) and to come back on the same port."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.fixtures.ports import free_port


@dataclass
class WebhookReceiver:
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    keys: list[str] = field(default_factory=list)  # Idempotency-Key per POST, in arrival order
    bodies: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    status: int = 200
    statuses: dict[str, int] = field(default_factory=dict)  # per event id, overrides status
    attempts: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/alerts"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.attempts += 1
        key = request.headers["Idempotency-Key"]
        status = self.statuses.get(key, self.status)
        if status == 200:
            self.keys.append(key)
            self.bodies.append(body)
            self.auth.append(request.headers.get("Authorization", ""))
        return web.Response(status=status, text="ok" if status == 200 else "no")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/alerts", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class _Collect:
    def __init__(self, inbox: list[email.message.EmailMessage], refuse: set[str]) -> None:
        self.inbox = inbox
        self.refuse = refuse

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        if str(msg["X-Fieldgate-Event-Id"]) in self.refuse:
            return "554 5.7.1 message refused"
        self.inbox.append(msg)
        return "250 OK"


@dataclass
class SmtpRelay:
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    inbox: list[email.message.EmailMessage] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # event ids answered with 554
    users: dict[str, str] | None = None  # require AUTH with these credentials
    _server: asyncio.Server | None = None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            self.users is not None
            and isinstance(data, LoginPassword)
            and self.users.get(data.login.decode()) == data.password.decode()
        )
        return AuthResult(success=ok)

    @property
    def event_ids(self) -> list[str]:
        return [str(m["X-Fieldgate-Event-Id"]) for m in self.inbox]

    def attached_events(self) -> list[dict[str, Any]]:
        out = []
        for msg in self.inbox:
            for part in msg.iter_attachments():
                out.append(json.loads(part.get_content()))
        return out

    async def start(self) -> None:
        handler = _Collect(self.inbox, self.refuse)
        auth: dict[str, Any] = {}
        if self.users is not None:
            # Plain-text AUTH is fine on loopback; a real relay gets STARTTLS first.
            auth = {
                "authenticator": self._authenticate,
                "auth_required": True,
                "auth_require_tls": False,
            }
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(handler, hostname="relay.test", **auth), self.host, self.port
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
