"""Shared fixtures: real servers on loopback, unique MQTT prefixes, leak guards."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fixtures.servers import Mosquitto, VictoriaMetrics


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A real mosquitto broker on a free loopback port for the whole session.

    A test that stops it must start it again before it ends (use ``restartable_mosquitto``
    for a broker of your own instead).
    """
    broker = Mosquitto(workdir=tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def restartable_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker owned by one test, free to be stopped and started (broker restarts)."""
    broker = Mosquitto(workdir=tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """A real VictoriaMetrics accepting the InfluxDB v2 write API on loopback."""
    server = VictoriaMetrics(workdir=tmp_path_factory.mktemp("victoria-metrics"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mqtt_prefix() -> str:
    """A topic segment unique to this test, used as the site name in MQTT topics."""
    return "t" + uuid.uuid4().hex[:10]


# -- leak guards ---------------------------------------------------------------------------

_THREAD_GRACE_S = 3.0


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    """Fail a test that leaves threads running (servers, executors, pollers)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + _THREAD_GRACE_S
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        # Daemon threads parked by libraries for the process lifetime are named; ours are not.
        extra = [t for t in extra if not t.name.startswith(("asyncio_", "ThreadPoolExecutor"))]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not extra, f"test left threads running: {[t.name for t in extra]}"


@pytest.fixture
async def _no_leftover_tasks() -> AsyncIterator[None]:
    """Fail an async test that leaves asyncio tasks behind (fire-and-forget is a bug)."""
    yield
    current = asyncio.current_task()
    # Give cancelled tasks one turn of the loop to finish unwinding.
    for _ in range(3):
        left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not left:
            return
        await asyncio.sleep(0.05)
    names = [t.get_name() for t in left]
    for task in left:
        task.cancel()
    pytest.fail(f"test left asyncio tasks running: {names}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        func = getattr(item, "function", None)
        if func is not None and inspect.iscoroutinefunction(func):
            item.fixturenames.append("_no_leftover_tasks")  # type: ignore[attr-defined]
