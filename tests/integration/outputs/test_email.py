"""E-mail through a real SMTP relay (aiosmtpd on loopback): authentication, a readable
message with the event JSON attached, retries and permanent refusals."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.events import Severity
from gateway.outputs import AlertBus, AlertOutputs, OutputsConfig
from gateway.outputs.email import message_id
from tests.fixtures.gateway import wait_until
from tests.fixtures.tasks import in_background
from tests.integration.outputs.servers import SmtpRelay
from tests.unit.outputs.helpers import make_event


def _config(relay: SmtpRelay, **email: Any) -> OutputsConfig:
    return OutputsConfig.model_validate(
        {
            "email": {
                "enabled": True,
                "host": relay.host,
                "port": relay.port,
                "starttls": False,
                "timeout_s": 2,
                "from_addr": "gateway@farm.test",
                "to_addrs": ["ops@farm.test", "oncall@farm.test"],
                **email,
            },
            "outbox": {"retry_first_s": 0.05, "retry_max_s": 0.2},
        }
    )


@contextlib.asynccontextmanager
async def running(outputs: AlertOutputs) -> AsyncIterator[AlertOutputs]:
    async with in_background(outputs.run(), "test:outputs"):
        yield outputs


# aiosmtpd warns about AUTH without TLS; fine on loopback (a real relay gets STARTTLS).
AUTH_WITHOUT_TLS = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@AUTH_WITHOUT_TLS
async def test_authenticated_relay_gets_one_readable_message_per_event(tmp_path: Path) -> None:
    relay = SmtpRelay(users={"gw": "pa55"})
    config = _config(relay, username="gw", password="pa55", min_severity="warning")
    outputs = AlertOutputs(config, AlertBus(), None, tmp_path, site="farm")
    events = [make_event(1), make_event(2, severity=Severity.INFO), make_event(3)]
    await relay.start()
    try:
        async with running(outputs):
            for event in events:
                outputs.deliver(event)
            await wait_until(lambda: len(relay.inbox) == 2, 10, "two e-mails")
    finally:
        await relay.stop()
    msg = relay.inbox[0]
    assert msg["Subject"] == "[fieldgate farm] CRITICAL raised: vibration_high on pump-07"
    assert msg["Message-ID"] == message_id(events[0].event_id, "farm")
    assert msg["To"] == "ops@farm.test, oncall@farm.test"
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    assert "vib_rms 7.5 above 5.0" in body.get_content()
    assert relay.event_ids == [events[0].event_id, events[2].event_id]  # INFO filtered out


@AUTH_WITHOUT_TLS
async def test_wrong_password_is_retried_not_dropped(tmp_path: Path) -> None:
    relay = SmtpRelay(users={"gw": "right"})
    config = _config(relay, username="gw", password="wrong", timeout_s=0.5)
    outputs = AlertOutputs(config, AlertBus(), None, tmp_path, site="farm")
    await relay.start()
    try:
        async with running(outputs):
            outputs.deliver(make_event(1))
            await wait_until(
                lambda: outputs.status().outbox_failures["email"] >= 2, 10, "auth retries"
            )
            assert outputs.status().outbox_rejected == {"email": 0}
    finally:
        await relay.stop()
    assert relay.inbox == []


async def test_a_permanently_refused_message_is_skipped_and_counted(tmp_path: Path) -> None:
    relay = SmtpRelay()
    events = [make_event(n) for n in range(3)]
    relay.refuse.add(events[0].event_id)
    outputs = AlertOutputs(_config(relay), AlertBus(), None, tmp_path, site="farm")
    await relay.start()
    try:
        async with running(outputs):
            for event in events:
                outputs.deliver(event)
            await wait_until(lambda: len(relay.inbox) == 2, 10, "the other two")
            assert outputs.status().outbox_rejected == {"email": 1}
    finally:
        await relay.stop()
    assert relay.event_ids == [events[1].event_id, events[2].event_id]
