"""Webhook destination: HTTP POST of the event JSON, with the event id as idempotency key.

Used through the outbox (gateway.outputs.outbox), which retries and keeps order. The
receiver sees ``Content-Type: application/json``, ``Idempotency-Key: <event_id>`` and
the configured headers. 2xx is success; 408/425/429/5xx and network errors are retried;
any other status is a permanent refusal (the row is marked rejected). Redirects are not
followed: a 3xx is refused, so an alert (and its headers, which may carry a token) never
goes anywhere but the configured URL.
"""

from __future__ import annotations

import logging

from gateway.errors import TransportError
from gateway.events import AlertEvent
from gateway.http_post import HttpConnection
from gateway.outputs.config import WebhookConfig
from gateway.outputs.outbox import DeliveryRejected, Notification

_LOGGER = logging.getLogger(__name__)

_RETRYABLE_4XX = frozenset({408, 425, 429})


class WebhookDestination:
    name = "webhook"

    def __init__(self, config: WebhookConfig) -> None:
        if config.url is None:
            raise ValueError("webhook url is not configured")
        self._config = config
        self._url = config.url
        self._headers = {k: v.get_secret_value() for k, v in config.headers.items()}

    def wants(self, event: AlertEvent) -> bool:
        return self._config.wants(event)

    async def send(self, note: Notification) -> None:
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "Idempotency-Key": note.event_id,
        }
        try:
            # A connection per notification: alerts are rare, and nothing outlives a send
            # (no pooled connection to go stale while the site is offline for hours).
            # Redirects are never followed (gateway.http_post does not).
            async with HttpConnection(timeout_s=self._config.timeout_s, keep_alive=False) as http:
                resp = await http.post(self._url, note.body, headers)
        except TransportError as exc:
            raise TransportError(f"webhook {exc}") from exc
        except (TimeoutError, OSError) as exc:
            raise TransportError(f"webhook {self._url}: {type(exc).__name__}: {exc}") from exc
        status = resp.status
        text = resp.text()[:200]
        if 200 <= status < 300:
            _LOGGER.debug("webhook: %s delivered (%d)", note.event_id, status)
            return
        if 300 <= status < 400:
            raise DeliveryRejected(
                f"webhook {self._url}: HTTP {status} redirect to "
                f"{resp.headers.get('Location', '?')} not followed (configure the final URL)"
            )
        if status >= 500 or status in _RETRYABLE_4XX:
            raise TransportError(f"webhook {self._url}: HTTP {status} {text}")
        raise DeliveryRejected(f"webhook {self._url}: HTTP {status} {text}")
