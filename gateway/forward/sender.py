"""One POST of line protocol to an InfluxDB v2 write API, and what its answer means.

A plain POST (gateway.http_post) rather than influxdb-client's write API: the backlog already holds encoded
lines, so a batch is one ``join`` + gzip + POST with no per-point objects; every status
code and header (``Retry-After``) reaches us unchanged, so 400 / 401-403 / 429 / 5xx are
told apart exactly; and nothing runs on a thread of its own (the client's batching
WriteApi does). The outcome is a value, never an exception for an HTTP answer.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import gzip
import logging
import time
from dataclasses import dataclass
from types import TracebackType

from gateway.errors import ConfigError, TransportError
from gateway.forward.config import ForwardConfig
from gateway.http_post import HttpConnection

_LOGGER = logging.getLogger(__name__)


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # 2xx: advance the checkpoint
    REFUSED = "refused"  # 400/422: the batch itself is bad; quarantine it and go on
    AUTH = "auth"  # 401/403: keep everything, tell the operator
    TOO_LARGE = "too_large"  # 413: resend in smaller batches
    RETRY = "retry"  # timeouts, connection errors, 429, 5xx, anything unexpected


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    status: int | None  # None: no HTTP answer (connection refused, timeout)
    reason: str
    retry_after_s: float | None = None


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def classify(status: int, body: str, headers: dict[str, str]) -> Outcome:
    reason = body.strip()[:500] or f"HTTP {status}"
    if 200 <= status < 300:
        return Outcome(Verdict.DELIVERED, status, "")
    if status in (400, 422):
        return Outcome(Verdict.REFUSED, status, reason)
    if status in (401, 403):
        return Outcome(Verdict.AUTH, status, reason)
    if status == 413:
        return Outcome(Verdict.TOO_LARGE, status, reason)
    after = retry_after(headers.get("Retry-After")) if status in (429, 503) else None
    return Outcome(Verdict.RETRY, status, reason, after)


class Sender:
    """Owns one kept-alive connection; use as ``async with Sender(cfg) as s: await s.send(body)``."""

    def __init__(self, config: ForwardConfig) -> None:
        self._config = config
        self._session: HttpConnection | None = None
        self.bytes_sent = 0  # on the wire (compressed)
        self.url = f"{config.url}/api/v2/write"
        self.params = {"org": config.org, "bucket": config.bucket, "precision": config.precision}

    async def __aenter__(self) -> Sender:
        self._session = HttpConnection(timeout_s=self._config.timeout_s)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, body: bytes) -> Outcome:
        """POST ``body`` (newline-separated lines); never raises for an HTTP or network error."""
        if self._session is None:
            raise RuntimeError("Sender used outside 'async with'")
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        try:
            auth = self._config.authorization()
        except ConfigError as exc:  # the token file went away: the operator must act
            return Outcome(Verdict.AUTH, None, exc.reason)
        if auth is not None:
            headers["Authorization"] = auth
        if self._config.gzip:
            # Level 1: most of the saving on a cellular link at a fraction of the CPU.
            body = await asyncio.to_thread(gzip.compress, body, 1)
            headers["Content-Encoding"] = "gzip"
        try:
            resp = await self._session.post(self.url, body, headers, params=self.params)
        except TimeoutError:
            return Outcome(Verdict.RETRY, None, f"timeout after {self._config.timeout_s:g} s")
        except TransportError as exc:
            return Outcome(Verdict.RETRY, None, str(exc))
        self.bytes_sent += len(body)
        return classify(resp.status, resp.text(), resp.headers)
