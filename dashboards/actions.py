"""What people do to alerts, shared by the pages and the JSON API; every action is audited."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable

from dashboards.data import now_ms
from dashboards.users import Silence, UserStore
from dashboards.view import GatewayView
from gateway.alerts.config import SilenceWindow
from gateway.alerts.state import AlertError
from gateway.events import Alert, AlertEvent

_LOGGER = logging.getLogger(__name__)
NODE_SELECTOR = re.compile(r"^[A-Za-z0-9._*-]{1,64}$")
MAX_SILENCE_MIN = 7 * 24 * 60


class ActionError(Exception):
    """The action cannot be done; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _not_ready(exc: RuntimeError) -> ActionError:
    return ActionError(503, f"the alert engine is not running yet ({exc}); try again shortly")


async def _change_alert(
    change: Callable[[str, str, str], Awaitable[AlertEvent]],
    *,
    verb: str,
    done: str,
    users: UserStore,
    who: str,
    alert_id: str,
    comment: str,
) -> Alert:
    """Acknowledge or clear through the alert engine, then audit and log who did it."""
    try:
        event = await change(alert_id, who, comment[:200])
    except AlertError as exc:
        raise ActionError(409, f"cannot {verb} {alert_id}: {exc.reason}") from None
    except RuntimeError as exc:
        raise _not_ready(exc) from None
    await asyncio.to_thread(users.audit, who, f"alert.{verb}", alert_id, comment[:200])
    _LOGGER.info("%s: alert %s %s by %s", event.alert.node_id, alert_id, done, who)
    return event.alert


async def acknowledge(
    view: GatewayView, users: UserStore, who: str, alert_id: str, comment: str
) -> Alert:
    return await _change_alert(
        view.alerts.acknowledge, verb="acknowledge", done="acknowledged",
        users=users, who=who, alert_id=alert_id, comment=comment,
    )  # fmt: skip


async def clear(
    view: GatewayView, users: UserStore, who: str, alert_id: str, comment: str
) -> Alert:
    return await _change_alert(
        view.alerts.clear, verb="clear", done="cleared",
        users=users, who=who, alert_id=alert_id, comment=comment,
    )  # fmt: skip


async def silence(
    view: GatewayView, users: UserStore, who: str, node_id: str, *, minutes: int, reason: str
) -> Silence:
    if not NODE_SELECTOR.match(node_id):
        raise ActionError(422, "node id: letters, digits, '.', '_', '-' or '*' (1-64)")
    if not 1 <= minutes <= MAX_SILENCE_MIN:
        raise ActionError(422, f"minutes: between 1 and {MAX_SILENCE_MIN} (one week)")
    start = now_ms()
    end = start + minutes * 60_000
    window = SilenceWindow(
        nodes=(node_id,),
        start=dt.datetime.fromtimestamp(start / 1000, dt.UTC),
        end=dt.datetime.fromtimestamp(end / 1000, dt.UTC),
        reason=f"{who}: {reason}"[:200],
    )
    try:
        await view.alerts.add_silence(window)
    except RuntimeError as exc:
        raise _not_ready(exc) from None
    record = Silence(node_id, start, end, who, reason[:200])
    await asyncio.to_thread(users.add_silence, record)
    await asyncio.to_thread(
        users.audit, who, "node.silence", node_id, f"{minutes} min: {reason[:200]}"
    )
    _LOGGER.info("%s: silenced by %s for %d min (%s)", node_id, who, minutes, reason)
    return record


async def restore_silences(view: GatewayView, users: UserStore) -> int:
    """Re-apply the dashboard's maintenance windows still in force (after a restart)."""
    count = 0
    for s in await asyncio.to_thread(users.silences, active_at_ms=now_ms()):
        window = SilenceWindow(
            nodes=(s.node_id,),
            start=dt.datetime.fromtimestamp(s.start_ms / 1000, dt.UTC),
            end=dt.datetime.fromtimestamp(s.end_ms / 1000, dt.UTC),
            reason=f"{s.who}: {s.reason}"[:200],
        )
        await view.alerts.add_silence(window)
        count += 1
    return count
