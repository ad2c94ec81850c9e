"""A node whose channels the gateway model does not cover is still scored, from its own
baseline, by T² + MSET over its own channels, and the alert says which detector scored it
(issue 16)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from gateway.alerts.config import load_alerts_config
from gateway.alerts.engine import AlertEngine
from gateway.events import AlertEventKind, AnomalyScore, Observation, ScoreSource
from gateway.ingest import Envelope
from gateway.pipeline import ScoringConfig, ScoringPipeline
from gateway.pipeline.fallback import OWN_BASELINE
from gateway.protocol.messages import Channel, ReadingBatch, Sample, TimeBase, Transport
from gateway.store.journal import CommitResult

FAN = (Channel("fan_speed", "rpm"), Channel("bearing_temp", "degC"), Channel("motor_amps", "A"))
T0 = 1_700_000_000_000
CAL = 120


def _rows(n: int, step_from: int | None) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = np.array([1450.0, 41.0, 3.2]) + rng.normal(0, 1, (n, 3)) * np.array([5.0, 0.2, 0.05])
    if step_from is not None:
        x[step_from:, 2] += 0.6  # the motor draws 12 sd more current
    return x


async def _run(config: ScoringConfig, rows: np.ndarray) -> list[Observation]:
    pipeline = ScoringPipeline(config)
    seen: list[Observation] = []

    def sink(observations: Sequence[Observation]) -> None:
        seen.extend(observations)

    pipeline.add_sink(sink)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(pipeline.run(), name="test:scoring")
        await pipeline.ready.wait()
        for start in range(0, len(rows), 10):
            chunk = rows[start : start + 10]
            wall = tuple(T0 + (start + i) * 1000 for i in range(len(chunk)))
            msg = ReadingBatch(
                "fan-3", 1, start + 1, TimeBase.UNIX_MS, FAN,
                tuple(Sample(w, tuple(float(v) for v in r)) for w, r in zip(wall, chunk, strict=True)),
            )  # fmt: skip
            pipeline.on_commit(
                CommitResult(
                    envelopes=[Envelope(msg, Transport.MQTT, wall[-1])],
                    new_counts=[len(chunk)],
                    wall_ms=[wall],
                )
            )
            await asyncio.sleep(0)
        async with asyncio.timeout(20):
            while (
                sum(isinstance(o, AnomalyScore) and o.source is ScoreSource.GATEWAY for o in seen)
                < len(rows) - CAL
            ):
                await asyncio.sleep(0.01)
        task.cancel()
    return seen


async def test_a_node_with_no_model_channel_is_scored_from_its_own_baseline() -> None:
    seen = await _run(ScoringConfig(calibration_rows=CAL, max_batch_delay_ms=0), _rows(300, 200))
    scores = [o for o in seen if isinstance(o, AnomalyScore) and o.source is ScoreSource.GATEWAY]
    assert len(scores) == 300 - CAL
    assert {s.model_version for s in scores} == {OWN_BASELINE}
    before = [s.score for s in scores if s.t_ms < T0 + 200_000]
    after = [s for s in scores if s.t_ms >= T0 + 205_000]
    assert np.quantile(before, 0.95) < 1.5
    assert min(s.score for s in after) > 3.0
    # The channels are named as the node names them.
    assert all(s.channels and s.channels[0][0] == "motor_amps" for s in after)

    engine = AlertEngine(load_alerts_config({"use_default_rules": False, "rules": {"gw": {"kind": "anomaly", "threshold": 2, "min_duration_s": 3}}}))  # fmt: skip
    events = engine.observe_many(seen)
    raised = [e for e in events if e.kind is AlertEventKind.RAISED]
    assert len(raised) == 1
    assert raised[0].at_ms >= T0 + 200_000
    assert "motor_amps" in raised[0].alert.message
    assert "T2+MSET on its own baseline" in raised[0].alert.message


async def test_fallback_off_leaves_such_a_node_unscored() -> None:
    config = ScoringConfig(calibration_rows=CAL, max_batch_delay_ms=0, fallback="off")
    pipeline = ScoringPipeline(config)
    seen: list[Observation] = []
    pipeline.add_sink(seen.extend)
    rows = _rows(200, None)
    wall = tuple(T0 + i * 1000 for i in range(len(rows)))
    msg = ReadingBatch(
        "fan-3", 1, 1, TimeBase.UNIX_MS, FAN,
        tuple(Sample(w, tuple(float(v) for v in r)) for w, r in zip(wall, rows, strict=True)),
    )  # fmt: skip
    pipeline.on_commit(CommitResult(envelopes=[Envelope(msg, Transport.MQTT, wall[-1])], new_counts=[len(rows)], wall_ms=[wall]))  # fmt: skip
    assert not any(isinstance(o, AnomalyScore) for o in seen)
    assert pipeline.stats.unscorable_rows == len(rows)
