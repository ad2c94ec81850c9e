"""A simulated pump with a labelled injected fault, through the real journal writer, the scoring
pipeline and the alert engine: the gateway's score crosses 1.0 inside the fault and not before,
and the default anomaly rule raises an alert there and clears it after."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from firmware_tools.sim.signals import Fault, FaultKind, LabelledSample, PumpSignal
from gateway.alerts.config import AlertsConfig
from gateway.alerts.engine import AlertEngine
from gateway.config import JournalConfig
from gateway.events import AlertEvent, AlertEventKind, AnomalyScore, Observation, ScoreSource
from gateway.ingest import Envelope, IngestQueue
from gateway.metrics import Metrics
from gateway.pipeline import ScoringConfig, ScoringPipeline
from gateway.protocol.messages import ReadingBatch, Sample, TimeBase, Transport
from gateway.store.journal import Journal
from gateway.store.writer import JournalWriter

T0_MS = 1_700_000_000_000
CALIBRATION_S = 1800  # the simulator's demand drifts with a 10-minute memory: see docs/scoring.md
FAULT_START_S = 2400
FAULT_S = 200
TOTAL_S = 2900


def _batches(samples: list[LabelledSample], per_batch: int) -> list[ReadingBatch]:
    sig_channels = PumpSignal().channels
    out = []
    for start in range(0, len(samples), per_batch):
        chunk = samples[start : start + per_batch]
        out.append(
            ReadingBatch(
                "pump-07",
                0xB007,
                start + 1,
                TimeBase.UPTIME_MS,
                sig_channels,
                tuple(Sample(round(s.t_s * 1000), s.values) for s in chunk),
            )
        )
    return out


@pytest.mark.parametrize("kind", [FaultKind.VALVE_CLOSED, FaultKind.CAVITATION])
async def test_injected_fault_raises_an_anomaly_alert_inside_it_and_clears_after(
    tmp_path: Path, kind: FaultKind
) -> None:
    signal = PumpSignal(rate_hz=1.0, seed=2, faults=[Fault(kind, FAULT_START_S, FAULT_S)])
    samples = signal.take(TOTAL_S)
    labelled = [s.t_s for s in samples if s.label]
    assert labelled[0] == FAULT_START_S
    assert labelled[-1] == FAULT_START_S + FAULT_S - 1

    journal = Journal(tmp_path / "journal.db", synchronous="NORMAL")
    queue = IngestQueue(10_000, "block")
    writer = JournalWriter(journal, queue, JournalConfig(), Metrics())
    pipeline = ScoringPipeline(ScoringConfig(calibration_rows=CALIBRATION_S, max_batch_delay_ms=0))
    engine = AlertEngine(AlertsConfig())
    scores: list[AnomalyScore] = []
    events: list[AlertEvent] = []

    def sink(observations: Sequence[Observation]) -> None:
        scores.extend(
            o
            for o in observations
            if isinstance(o, AnomalyScore) and o.source is ScoreSource.GATEWAY
        )
        events.extend(engine.observe_many(observations))

    pipeline.add_sink(sink)
    writer.add_listener(pipeline.on_commit)
    expected_scores = TOTAL_S - CALIBRATION_S
    async with asyncio.TaskGroup() as tg:
        writer_task = tg.create_task(writer.run(), name="test:journal")
        pipeline_task = tg.create_task(pipeline.run(), name="test:scoring")
        await asyncio.wait_for(writer.ready.wait(), 10)
        # The node's uptime clock is mapped to wall time by the journal; receive times follow
        # the samples as if they arrived live (one batch every 10 s).
        for batch in _batches(samples, 10):
            await queue.put(Envelope(batch, Transport.SERIAL, T0_MS + batch.samples[-1].t + 40))
        async with asyncio.timeout(30):
            while len(scores) < expected_scores:
                await asyncio.sleep(0.02)
        writer_task.cancel()
        pipeline_task.cancel()

    # Wall time of node time 0 (the journal's clock estimate: the smallest receive delay).
    offset = scores[0].t_ms - CALIBRATION_S * 1000
    assert offset == T0_MS + 40
    t_s = [(s.t_ms - offset) / 1000 for s in scores]
    assert t_s[-1] == TOTAL_S - 1
    high = [t for t, s in zip(t_s, scores, strict=True) if s.score >= 1.0]
    assert high, "the gateway never scored the fault as anomalous"
    assert high[0] >= FAULT_START_S - 10, f"score crossed 1.0 at {high[0]} s, before the fault"
    inside = [
        s.score
        for t, s in zip(t_s, scores, strict=True)
        if FAULT_START_S + 30 <= t < FAULT_START_S + FAULT_S
    ]
    assert sum(v >= 1.0 for v in inside) / len(inside) > 0.9

    anomaly = [e for e in events if e.alert.rule == "anomaly"]
    raised = [e for e in anomaly if e.kind is AlertEventKind.RAISED]
    cleared = [e for e in anomaly if e.kind is AlertEventKind.CLEARED]
    assert len(raised) == 1, [(e.kind, e.at_ms) for e in anomaly]
    raised_s = (raised[0].at_ms - offset) / 1000
    assert FAULT_START_S <= raised_s <= FAULT_START_S + 30
    assert len(cleared) == 1
    cleared_s = (cleared[0].at_ms - offset) / 1000
    assert FAULT_START_S + FAULT_S <= cleared_s <= FAULT_START_S + FAULT_S + 60
    assert raised[0].alert.node_id == "pump-07"
