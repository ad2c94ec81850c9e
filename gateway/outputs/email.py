"""E-mail destination: one message per alert event through the configured SMTP relay.

Used through the outbox, which retries and keeps order. smtplib runs in a worker thread
(one short session per message). The ``Message-ID`` is derived from the event id, so a
resent message is a duplicate any mail system can recognise; the event id is also in the
``X-Fieldgate-Event-Id`` header and the attached JSON. 5xx refusals of the sender, the
recipients or the data are permanent (the row is marked rejected); everything else
(unreachable relay, 4xx, authentication) is retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from gateway.errors import TransportError
from gateway.events import AlertEvent
from gateway.outputs.config import EmailConfig
from gateway.outputs.outbox import DeliveryRejected, Notification
from gateway.outputs.payload import decode_event

_LOGGER = logging.getLogger(__name__)


def message_id(event_id: str, site: str) -> str:
    """A valid, deterministic RFC 5322 Message-ID for ``event_id``."""
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:32]
    return f"<{digest}.alert@{site}.fieldgate.invalid>"


def build_message(note: Notification, config: EmailConfig) -> EmailMessage:
    event, site = decode_event(note.body)
    alert = event.alert
    msg = EmailMessage()
    severity = alert.severity.name
    msg["Subject"] = (
        f"[fieldgate {site}] {severity} {event.kind.value}: {alert.rule} on {alert.node_id}"
    )
    msg["From"] = config.from_addr or ""
    msg["To"] = ", ".join(config.to_addrs)
    msg["Date"] = formatdate(event.at_ms / 1000, localtime=False)
    msg["Message-ID"] = message_id(event.event_id, site)
    msg["X-Fieldgate-Event-Id"] = event.event_id
    lines = [
        f"Alert {event.kind.value}: {alert.message}",
        "",
        f"site:      {site}",
        f"node:      {alert.node_id}",
        f"rule:      {alert.rule}",
        f"severity:  {severity.lower()}",
        f"state:     {alert.state.value}",
        f"value:     {alert.value}",
        f"alert id:  {alert.alert_id}",
        f"event id:  {event.event_id}",
    ]
    if alert.acked_by:
        lines.append(f"acked by:  {alert.acked_by} ({alert.ack_comment or ''})")
    msg.set_content("\n".join(lines) + "\n")
    msg.add_attachment(
        json.dumps(json.loads(note.body), indent=2).encode(),
        maintype="application",
        subtype="json",
        filename="alert_event.json",
    )
    return msg


class EmailDestination:
    name = "email"

    def __init__(self, config: EmailConfig) -> None:
        if not config.host or not config.from_addr or not config.to_addrs:
            raise ValueError("e-mail host, from_addr and to_addrs must be configured")
        self._config = config

    def wants(self, event: AlertEvent) -> bool:
        return self._config.wants(event)

    async def send(self, note: Notification) -> None:
        msg = build_message(note, self._config)
        await asyncio.to_thread(self._send_blocking, msg, note.event_id)

    def _send_blocking(self, msg: EmailMessage, event_id: str) -> None:
        cfg = self._config
        where = f"SMTP relay {cfg.host}:{cfg.port}"
        try:
            with smtplib.SMTP(cfg.host or "", cfg.port, timeout=cfg.timeout_s) as smtp:
                if cfg.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if cfg.username is not None and cfg.password is not None:
                    smtp.login(cfg.username, cfg.password.get_secret_value())
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if all(code >= 500 for code in codes):
                raise DeliveryRejected(f"{where}: every recipient refused: {codes}") from exc
            raise TransportError(f"{where}: recipients refused for now: {codes}") from exc
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            if exc.smtp_code >= 500:
                raise DeliveryRejected(f"{where}: {exc.smtp_code} {exc.smtp_error!r}") from exc
            raise TransportError(f"{where}: {exc.smtp_code} {exc.smtp_error!r}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            # Includes refused connections, timeouts, TLS and authentication failures:
            # the relay or its config may come right; the alert must not be dropped.
            raise TransportError(f"{where}: {type(exc).__name__}: {exc}") from exc
        _LOGGER.debug("email: %s sent via %s", event_id, where)
