"""The JSON API against its own OpenAPI schema (schemathesis): generated requests to every
endpoint of a real gateway's dashboard never get a 5xx, and every response matches the
schema. The gateway (with two simulated nodes) runs on its own thread and event loop, since
schemathesis calls it synchronously."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from tests.fixtures.dashboard import running_dashboard


class _Background:
    """A real gateway + dashboard + simulated nodes on a thread of its own."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.ready = threading.Event()
        self.url = ""
        self.token = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(),), name="test:api-gateway"
        )

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with running_dashboard(self.tmp_path, nodes=2) as dash:
            self.url = dash.url
            self.token = dash.tokens["operator"]
            self.ready.set()
            await self._stop.wait()

    def __enter__(self) -> _Background:
        self._thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("the gateway did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture
def api_gateway(tmp_path: Path) -> Iterator[_Background]:
    with _Background(tmp_path) as gateway:
        yield gateway


def test_api_conforms_to_its_schema(api_gateway: _Background) -> None:
    headers = {"Authorization": f"Bearer {api_gateway.token}"}
    schema = schemathesis.openapi.from_url(f"{api_gateway.url}/api/openapi.json", headers=headers)
    tested = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the schema itself is valid
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def conforms(case: Any) -> None:
            case.call_and_validate(headers=headers)

        conforms()
        tested.append(operation.label)
    assert len(tested) >= 14, tested  # every endpoint of the API, not a subset
    jobs = {"GET /api/jobs", "GET /api/jobs/{job_id}", "POST /api/jobs", "POST /api/jobs/rollback"}
    assert jobs <= set(tested), tested
