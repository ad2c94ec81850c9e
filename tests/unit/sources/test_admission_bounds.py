"""50,000 made-up node ids: refused, counted in bounded series, and logged in bounded lines."""

from __future__ import annotations

import logging

import pytest

from gateway.metrics import Metrics
from gateway.protocol.messages import Channel, ReadingBatch, Sample, TimeBase, Transport
from gateway.sources.common import Admission


def reading(node: str) -> ReadingBatch:
    return ReadingBatch(
        node, 1, 1, TimeBase.UPTIME_MS, (Channel("current", "A"),), (Sample(0, (1.0,)),)
    )


def test_made_up_ids_cannot_grow_memory_or_the_log(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    admission = Admission(Transport.MQTT, metrics, frozenset({"pump-01"}))
    with caplog.at_level(logging.WARNING):
        refused = sum(
            not admission.admit(reading(f"fake-{i}"), "fieldgate/s/x/readings", "mqtt")
            for i in range(50_000)
        )
        assert admission.admit(reading("pump-01"), "fieldgate/s/pump-01/readings", "mqtt")
    assert refused == 50_000
    assert admission.remembered <= 1000
    assert len(caplog.records) <= 1002
    assert len(metrics.rejected_nodes) <= 101
    assert sum(metrics.rejected_nodes.values()) == 50_000
