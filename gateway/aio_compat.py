"""Cancellation helpers for aiomqtt on Python 3.11.

Python 3.11's ``asyncio.wait_for`` (used inside aiomqtt's connect, publish and subscribe)
swallows a cancellation that races with the awaited result (fixed in 3.12, gh-86296), and
aiomqtt turns a cancelled read into ``MqttError``. A reconnect loop that catches MqttError
would then reconnect instead of stopping, and a shutdown would hang on it. Call
:func:`checkpoint` after each such call and test :func:`being_cancelled` before retrying.
"""

from __future__ import annotations

import asyncio


def being_cancelled() -> bool:
    """True when the current task has a cancellation request pending."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def checkpoint() -> None:
    """Re-raise a cancellation that an awaited library call swallowed."""
    if being_cancelled():
        raise asyncio.CancelledError
