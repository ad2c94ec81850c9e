"""A webhook receiver that redirects does not get to send an alert somewhere else."""

from __future__ import annotations

import pytest
from aiohttp import web

from gateway.outputs.config import WebhookConfig
from gateway.outputs.outbox import DeliveryRejected, Notification
from gateway.outputs.webhook import WebhookDestination
from tests.fixtures.ports import free_port
from tests.integration.outputs.servers import WebhookReceiver


async def test_a_307_is_refused_and_nothing_reaches_the_redirect_target() -> None:
    elsewhere = WebhookReceiver()
    await elsewhere.start()

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(elsewhere.url)

    app = web.Application()
    app.router.add_post("/alerts", redirect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        hook = WebhookDestination(
            WebhookConfig(
                enabled=True,
                url=f"http://127.0.0.1:{port}/alerts",
                headers={"Authorization": "Bearer site-token"},
            )
        )
        with pytest.raises(DeliveryRejected, match=r"redirect .* not followed"):
            await hook.send(Notification(1, "evt-1", b'{"id": "evt-1"}', 0))
    finally:
        await runner.cleanup()
        await elsewhere.stop()
    assert elsewhere.attempts == 0
    assert elsewhere.auth == []
