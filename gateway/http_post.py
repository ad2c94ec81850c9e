"""A small HTTP/1.1 POST client: h11 (sans-IO) over asyncio streams.

The forwarder and the webhook output only ever POST a body and read a short answer; aiohttp
did that for them at about 9 MB of resident memory for its import alone (docs/benchmarks.md,
"issue 18: the gateway's memory"). h11 is the protocol state machine (it already comes with
uvicorn, which serves the dashboard); this module adds the socket, TLS, a timeout and
keep-alive.

What it promises: :meth:`HttpConnection.post` returns an :class:`HttpResponse` for any HTTP
answer (every status, every header, no exception for a 4xx or 5xx); connection and protocol
failures raise :class:`~gateway.errors.TransportError`, the timeout raises ``TimeoutError``.
Redirects are never followed and no proxy variables are read (as aiohttp's defaults).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlencode, urlsplit

import h11

from gateway.errors import TransportError

# An answer larger than this is cut (the callers keep the first few hundred characters) and
# its connection closed rather than read to the end.
MAX_ANSWER_BYTES = 1 << 20
_READ_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # names in Title-Case; a repeated header keeps its last value
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int
    tls: bool
    path: str  # path and query, as sent in the request line
    host_header: str


def _target(url: str, params: Mapping[str, str] | None) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TransportError(f"{url}: not an http:// or https:// URL")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    path = parts.path or "/"
    query = "&".join(q for q in (parts.query, urlencode(params) if params else "") if q)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    default = port == (443 if tls else 80)
    return _Target(
        host,
        port,
        tls,
        f"{path}?{query}" if query else path,
        shown if default else f"{shown}:{port}",
    )


class HttpConnection:
    """One connection to one origin, reopened when the server closed it.

    ``keep_alive=False`` closes it after every request (the webhook: alerts are rare and no
    pooled connection should go stale while the site is offline for hours). A request on a
    kept-alive connection that fails before any answer arrived is sent once more on a new
    connection: the server may have closed it while idle. Use as ``async with``.
    """

    def __init__(self, *, timeout_s: float, keep_alive: bool = True) -> None:
        self._timeout_s = timeout_s
        self._keep_alive = keep_alive
        self._origin: tuple[str, int, bool] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._h11: h11.Connection | None = None

    async def __aenter__(self) -> HttpConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        writer, self._writer, self._reader, self._h11 = self._writer, None, None, None
        if writer is not None:
            writer.close()
            # Closing a connection the peer already dropped.
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        params: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """POST ``body`` to ``url`` and return the answer (any status) within the timeout."""
        target = _target(url, params)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._post(target, url, body, headers)
        except TimeoutError:
            await self.close()  # a half-finished exchange must not be reused
            raise

    async def _post(
        self, target: _Target, url: str, body: bytes, headers: Mapping[str, str]
    ) -> HttpResponse:
        reused = self._writer is not None and self._origin == (target.host, target.port, target.tls)
        try:
            return await self._exchange(target, body, headers)
        except _NoAnswer as exc:
            await self.close()
            if not reused:
                raise TransportError(f"{url}: {exc.reason}") from exc.__cause__
        try:  # the kept-alive connection had gone stale: once more on a new one
            return await self._exchange(target, body, headers)
        except _NoAnswer as exc:
            await self.close()
            raise TransportError(f"{url}: {exc.reason}") from exc.__cause__

    async def _exchange(
        self, target: _Target, body: bytes, headers: Mapping[str, str]
    ) -> HttpResponse:
        if self._writer is None or self._origin != (target.host, target.port, target.tls):
            await self.close()
            await self._open(target)
        conn, reader, writer = self._h11, self._reader, self._writer
        if conn is None or reader is None or writer is None:
            raise _NoAnswer("the connection was closed meanwhile")
        request = h11.Request(
            method="POST",
            target=target.path,
            headers=[
                ("Host", target.host_header),
                ("User-Agent", "fieldgate"),
                *headers.items(),
                ("Content-Length", str(len(body))),
                *(() if self._keep_alive else (("Connection", "close"),)),
            ],
        )
        try:
            writer.write(conn.send(request) + conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            response = await _next_response(conn, reader)
        except (OSError, ssl.SSLError, h11.ProtocolError) as exc:
            raise _NoAnswer(f"{type(exc).__name__}: {exc}") from exc
        if response is None:
            raise _NoAnswer("the server closed the connection without answering")
        try:
            answer, complete = await _read_answer(conn, reader, response)
        except (OSError, ssl.SSLError, h11.ProtocolError) as exc:
            await self.close()
            raise TransportError(f"reading the answer: {type(exc).__name__}: {exc}") from exc
        if complete and self._keep_alive and conn.our_state is conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self.close()
        return answer

    async def _open(self, target: _Target) -> None:
        context = ssl.create_default_context() if target.tls else None
        try:
            self._reader, self._writer = await asyncio.open_connection(
                target.host,
                target.port,
                ssl=context,
                server_hostname=target.host if context is not None else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(
                f"{target.host}:{target.port}: {type(exc).__name__}: {exc}"
            ) from exc
        self._origin = (target.host, target.port, target.tls)
        self._h11 = h11.Connection(h11.CLIENT)


async def _next_response(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Response | None:
    """The next response head (1xx interim answers skipped); None at a clean EOF."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(_READ_CHUNK)
            if not data and conn.their_state is h11.SEND_RESPONSE:
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            return event
        elif isinstance(event, h11.ConnectionClosed):
            return None
        # h11.InformationalResponse (100 Continue and the like): wait for the real one


async def _read_answer(
    conn: h11.Connection, reader: asyncio.StreamReader, response: h11.Response
) -> tuple[HttpResponse, bool]:
    """The answer, and whether it was read to its end (False: cut at MAX_ANSWER_BYTES)."""
    body = bytearray()
    complete = True
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(_READ_CHUNK))
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_ANSWER_BYTES:
                complete = False
                break
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    headers = {
        name.decode("latin-1").title(): value.decode("latin-1") for name, value in response.headers
    }
    return HttpResponse(response.status_code, headers, bytes(body[:MAX_ANSWER_BYTES])), complete


class _NoAnswer(Exception):
    """The request could not be sent, or no answer came (the server closed first)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
