"""Script hook: a real executable gets the event JSON and FIELDGATE_* variables; runs
are bounded in number and time; exit statuses are counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.events import AlertEventKind
from gateway.outputs.config import ScriptHookConfig
from gateway.outputs.payload import encode_event
from gateway.outputs.script_hook import ScriptHook
from tests.fixtures.gateway import wait_until
from tests.fixtures.tasks import in_background
from tests.unit.outputs.helpers import make_event

HOOK = """#!/bin/sh
out="$1"
cat > "$out/$FIELDGATE_EVENT_ID.json"
env > "$out/$FIELDGATE_EVENT_ID.env"
touch "$out/running.$$"
ls "$out" | grep -c '^running\\.' >> "$out/concurrency"
sleep "${HOOK_SLEEP:-0}" &
echo $! > "$out/$FIELDGATE_EVENT_ID.child"
wait
rm "$out/running.$$"
exit "${HOOK_EXIT:-0}"
"""


@pytest.fixture
def hook_script(tmp_path: Path) -> Path:
    path = tmp_path / "hook.sh"
    path.write_text(HOOK)
    path.chmod(0o755)
    (tmp_path / "out").mkdir()
    return path


def _config(script: Path, **kw: object) -> ScriptHookConfig:
    return ScriptHookConfig.model_validate(
        {"enabled": True, "path": str(script), "args": [str(script.parent / "out")], **kw}
    )


@contextlib.asynccontextmanager
async def running(hook: ScriptHook) -> AsyncIterator[ScriptHook]:
    async with in_background(hook.run(), "test:script_hook"):
        yield hook


async def test_script_receives_the_event_json_and_env(
    hook_script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIELDGATE_OUTPUTS__EMAIL__PASSWORD", "do-not-leak")
    out = hook_script.parent / "out"
    event = make_event(1)
    body = encode_event(event, "farm")
    async with running(ScriptHook(_config(hook_script), "farm")) as hook:
        hook.offer(event, body)
        await wait_until(lambda: hook.succeeded == 1, 10, "script ran")
    assert (out / f"{event.event_id}.json").read_bytes() == body
    env = dict(
        line.split("=", 1) for line in (out / f"{event.event_id}.env").read_text().splitlines()
    )
    assert env["FIELDGATE_EVENT_ID"] == event.event_id
    assert env["FIELDGATE_NODE_ID"] == "pump-07"
    assert env["FIELDGATE_SEVERITY"] == "critical"
    assert env["FIELDGATE_SITE"] == "farm"
    assert "FIELDGATE_OUTPUTS__EMAIL__PASSWORD" not in env  # the gateway's env is not inherited
    assert json.loads(body)["event_id"] == event.event_id


async def test_no_more_than_max_concurrent_scripts_run_at_once(hook_script: Path) -> None:
    out = hook_script.parent / "out"
    cfg = _config(hook_script, max_concurrent=2, env={"HOOK_SLEEP": "0.3"})
    async with running(ScriptHook(cfg, "s")) as hook:
        for n in range(5):
            hook.offer(make_event(n), b"{}")
        await wait_until(lambda: hook.succeeded == 5, 15, "five runs")
    seen = [int(x) for x in (out / "concurrency").read_text().split()]
    assert len(seen) == 5
    assert max(seen) == 2


async def test_a_script_past_its_timeout_is_killed_with_its_children(hook_script: Path) -> None:
    out = hook_script.parent / "out"
    event = make_event(1)
    cfg = _config(hook_script, timeout_s=0.5, env={"HOOK_SLEEP": "30"})
    async with running(ScriptHook(cfg, "s")) as hook:
        hook.offer(event, b"{}")
        await wait_until(lambda: hook.timed_out == 1, 10, "timeout")
    child = int((out / f"{event.event_id}.child").read_text())
    await wait_until(lambda: not _alive(child), 5, "the script's child is gone")


async def test_non_zero_exit_is_counted_as_failure(hook_script: Path) -> None:
    async with running(ScriptHook(_config(hook_script, env={"HOOK_EXIT": "3"}), "s")) as hook:
        hook.offer(make_event(1), b"{}")
        await wait_until(lambda: hook.failed == 1, 10, "failure")
        assert hook.succeeded == 0


async def test_only_configured_kinds_run_the_script(hook_script: Path) -> None:
    async with running(ScriptHook(_config(hook_script, kinds=["raised"]), "s")) as hook:
        hook.offer(make_event(1, kind=AlertEventKind.CLEARED), b"{}")
        hook.offer(make_event(2), b"{}")
        await wait_until(lambda: hook.succeeded == 1, 10, "one run")
        await asyncio.sleep(0.2)
        assert hook.started == 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False
