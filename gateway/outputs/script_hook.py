"""Script hook: run a local executable for each alert event.

The script gets the event JSON (gateway.outputs.payload) on stdin and ``FIELDGATE_*``
variables (event id, kind, alert id, rule, node, severity, state, message, value, site)
in a minimal environment: it does not inherit the gateway's, which may hold secrets.
At most ``max_concurrent`` scripts run at once; one that outlives ``timeout_s`` is
killed with its whole process group. Every exit status is logged and counted. Events
wait in a bounded queue; when it is full the oldest is dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import deque

from gateway.events import AlertEvent
from gateway.outputs.config import ScriptHookConfig
from gateway.outputs.payload import script_env

_LOGGER = logging.getLogger(__name__)

_BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


class ScriptHook:
    def __init__(self, config: ScriptHookConfig, site: str) -> None:
        if config.path is None:
            raise ValueError("script hook path is not configured")
        self._config = config
        self._path = config.path
        self._site = site
        self._queue: deque[tuple[AlertEvent, bytes]] = deque(maxlen=config.queue_max_events)
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_concurrent)
        self.started = 0
        self.succeeded = 0
        self.failed = 0  # non-zero exit or could not start
        self.timed_out = 0
        self.dropped = 0
        self.running = 0

    def offer(self, event: AlertEvent, body: bytes) -> None:
        """Queue a run for ``event`` (never blocks)."""
        if not self._config.wants(event):
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            _LOGGER.warning("%s: script hook queue full; dropped oldest", event.alert.node_id)
        self._queue.append((event, body))
        self._wakeup.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            while True:
                if not self._queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                # Take a slot before taking the event, so waiting events stay in the
                # bounded queue (and its overflow policy) rather than in tasks.
                await self._slots.acquire()
                event, body = self._queue.popleft()
                tg.create_task(self._run_one(event, body), name=f"output:script:{event.event_id}")

    async def _run_one(self, event: AlertEvent, body: bytes) -> None:
        try:
            self.running += 1
            await self._execute(event, body)
        finally:
            self.running -= 1
            self._slots.release()

    async def _execute(self, event: AlertEvent, body: bytes) -> None:
        node = event.alert.node_id
        env = {**_BASE_ENV, **self._config.env, **script_env(event, self._site)}
        self.started += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                str(self._path),
                *self._config.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                # Own process group: a timeout kills the script's children too.
                start_new_session=True,
            )
        except OSError as exc:
            self.failed += 1
            _LOGGER.error("%s: script hook %s could not start: %s", node, self._path, exc)
            return
        try:
            async with asyncio.timeout(self._config.timeout_s):
                _, stderr = await proc.communicate(body)
        except TimeoutError:
            self.timed_out += 1
            _kill_group(proc.pid)
            await proc.wait()
            _LOGGER.error(
                "%s: script hook %s killed after %.1f s (event %s)",
                node,
                self._path,
                self._config.timeout_s,
                event.event_id,
            )
            return
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            await asyncio.shield(proc.wait())
            raise
        if proc.returncode == 0:
            self.succeeded += 1
            _LOGGER.info("%s: script hook %s exited 0 (event %s)", node, self._path, event.event_id)
        else:
            self.failed += 1
            _LOGGER.warning(
                "%s: script hook %s exited %s (event %s): %s",
                node,
                self._path,
                proc.returncode,
                event.event_id,
                stderr[-500:].decode(errors="replace").strip(),
            )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
