"""A VictoriaMetrics of the test's own, free to stop, restart, or require a password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.servers import VictoriaMetrics


@pytest.fixture
def own_victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """No dedup: a point delivered twice is stored twice, so tests can count doubles."""
    server = VictoriaMetrics(workdir=tmp_path / "vm")
    server.start()
    yield server
    server.stop()
