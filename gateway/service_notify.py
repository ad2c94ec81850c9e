"""Tell a service manager (systemd ``Type=notify``) that the gateway is ready, alive or stopping.

The sd_notify protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). No libsystemd is needed,
and outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.

The watchdog ping is sent from a task on the gateway's event loop, and only while the journal
writer is open: a wedged loop or a dead journal stops the pings and systemd restarts the
service (``WatchdogSec=``), which is what crash-only recovery wants.

The two variables read here are the service manager's protocol with this process, not
configuration, which is why they are read outside ``gateway.config``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

_LOGGER = logging.getLogger(__name__)


class ServiceNotifier:
    """Sends sd_notify messages; does nothing when not started by a service manager."""

    def __init__(self, socket_path: str | None, watchdog_usec: int | None = None) -> None:
        self._address: str | bytes | None = None
        if socket_path:
            # "@name" is Linux's abstract namespace, written with a leading NUL byte.
            self._address = (
                b"\0" + socket_path[1:].encode() if socket_path.startswith("@") else socket_path
            )
        self.watchdog_interval_s: float | None = (
            # systemd's advice: ping at half the timeout, so one late ping is not fatal.
            watchdog_usec / 2_000_000 if watchdog_usec else None
        )
        self.sent = 0
        self.failed = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ServiceNotifier:
        env = os.environ if environ is None else environ
        watchdog = env.get("WATCHDOG_USEC")
        # WATCHDOG_PID names the process the watchdog is meant for; a child of ours
        # (a script hook, say) must not ping on our behalf.
        pid = env.get("WATCHDOG_PID")
        if pid is not None and pid.strip() != str(os.getpid()):
            watchdog = None
        try:
            usec = int(watchdog) if watchdog else None
        except ValueError:
            _LOGGER.warning("ignoring WATCHDOG_USEC=%r: not an integer", watchdog)
            usec = None
        return cls(env.get("NOTIFY_SOCKET"), usec if usec and usec > 0 else None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one message; True if sent."""
        if self._address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self._address)
        except OSError as exc:
            # A service manager that went away must not take the gateway with it.
            self.failed += 1
            if self.failed == 1:
                _LOGGER.warning("cannot notify the service manager: %s", exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=shutting down")

    async def run_watchdog(self, alive: Callable[[], bool]) -> None:
        """Ping the watchdog while ``alive()`` holds; return at once if there is no watchdog."""
        interval = self.watchdog_interval_s
        if interval is None or not self.enabled:
            return
        while True:
            if alive():
                self.notify("WATCHDOG=1")
            else:
                _LOGGER.error("gateway not healthy: withholding the watchdog ping")
            await asyncio.sleep(interval)
