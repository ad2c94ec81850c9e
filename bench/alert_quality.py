"""Alert quality on the real SKAB experiments: streaming pipeline + alert engine, row by row.

Each labelled SKAB file is one machine (one node, its own baseline). Its rows are committed to
the :class:`~gateway.pipeline.ScoringPipeline` one sample per ``ReadingBatch`` (channels named
the way a replaying node names them, so the default channel map is exercised), scored by the
pipeline's worker, and the observations go through :class:`~gateway.alerts.engine.AlertEngine`
with the default anomaly-score rule (threshold 1.0, hysteresis 0.2, 5 s minimum duration).

Per file it reports:

* detection delay: first anomaly alert raised inside a labelled anomaly, minus its onset;
* false alerts: anomaly alerts raised outside every labelled anomaly;
* missed anomalies: labelled anomalies with no alert raised inside them;
* agreement with the offline batch scorer (:mod:`tinymodels.evaluate`): the largest score
  difference over the file, and SKAB's pointwise F1 of the streaming decisions (score above
  threshold, debounced with the manifest's hold_on/hold_off as the batch scorer does) next to
  the batch scorer's.

The first ``calibration_rows`` rows (400, as in SKAB's protocol) are the baseline and are not
scored. Run: ``python -m bench.alert_quality --data ../shared/data/skab [--quick]``.
Last line: ``RESULT alert_quality files=<n> detected=<d>/<n_anomalies> median_delay_s=<x>
false_alerts=<y>``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from firmware_tools.sim.replay import SKAB_CHANNELS
from gateway.alerts.config import DEFAULT_RULES, AlertsConfig
from gateway.alerts.engine import AlertEngine
from gateway.events import AlertEvent, AlertEventKind, AnomalyScore, Observation, ScoreSource
from gateway.ingest import Envelope
from gateway.pipeline import ScoringConfig, ScoringPipeline
from gateway.protocol.messages import ReadingBatch, Sample, TimeBase, Transport
from gateway.store.journal import CommitResult
from tinymodels.gateway_features import debounce
from tinymodels.runtime import FrameScores, load_model
from tinymodels.skab_data import SkabFile, labelled_files, load_skab_csv
from tinymodels.skab_score import FIT_ROWS, PointCounts, point_counts

QUICK_FILES = 8
COMMIT_ROWS = 10  # samples per simulated commit (a node sending one sample per message)


@dataclass(frozen=True, slots=True)
class FileResult:
    name: str
    anomalies: int
    detected: int
    delays_s: list[float]
    false_alerts: int
    max_score_diff: float
    stream_counts: PointCounts
    batch_counts: PointCounts


def _segments(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end] row index pairs of runs of True."""
    out = []
    start = None
    for i, v in enumerate(flags.tolist()):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(flags) - 1))
    return out


async def replay_file(f: SkabFile, node_id: str) -> tuple[list[AnomalyScore], list[AlertEvent]]:
    """Stream one file through a fresh pipeline and alert engine."""
    pipeline = ScoringPipeline(ScoringConfig(calibration_rows=FIT_ROWS, max_batch_delay_ms=0))
    engine = AlertEngine(
        AlertsConfig(use_default_rules=False, rules={"anomaly": DEFAULT_RULES["anomaly"]})
    )
    scores: list[AnomalyScore] = []
    events: list[AlertEvent] = []
    expected = max(len(f.t_s) - FIT_ROWS, 0)
    done = asyncio.Event()

    def sink(observations: Sequence[Observation]) -> None:
        new = [
            o
            for o in observations
            if isinstance(o, AnomalyScore) and o.source is ScoreSource.GATEWAY
        ]
        events.extend(engine.observe_many(observations))
        if new:
            scores.extend(new)
            events.extend(engine.tick(new[-1].t_ms))
        if len(scores) >= expected:
            done.set()

    pipeline.add_sink(sink)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(pipeline.run(), name=f"bench:scoring:{node_id}")
        await pipeline.ready.wait()
        for start in range(0, len(f.t_s), COMMIT_ROWS):
            envs: list[Envelope] = []
            wall: list[tuple[int, ...]] = []
            for i in range(start, min(start + COMMIT_ROWS, len(f.t_s))):
                t_ms = int(f.t_s[i]) * 1000
                sample = Sample(t_ms, tuple(float(v) for v in f.values[i]))
                msg = ReadingBatch(node_id, 1, i + 1, TimeBase.UNIX_MS, SKAB_CHANNELS, (sample,))
                envs.append(Envelope(msg, Transport.SERIAL, t_ms))
                wall.append((t_ms,))
            pipeline.on_commit(
                CommitResult(envelopes=envs, new_counts=[1] * len(envs), wall_ms=wall)
            )
            await asyncio.sleep(0)
        if expected:
            await done.wait()
        task.cancel()
    return scores, events


def assess(
    f: SkabFile,
    scores: list[AnomalyScore],
    events: list[AlertEvent],
    batch: FrameScores,
    hold: tuple[int, int],
) -> FileResult:
    assert f.anomaly is not None
    t_ms = f.t_s.astype(np.int64) * 1000
    test = slice(FIT_ROWS, None)
    segments = [
        (int(t_ms[FIT_ROWS + a]), int(t_ms[FIT_ROWS + b])) for a, b in _segments(f.anomaly[test])
    ]
    raised = [e.at_ms for e in events if e.kind is AlertEventKind.RAISED]
    delays, false_alerts = [], 0
    detected_segments = set()
    for at in raised:
        inside = [k for k, (a, b) in enumerate(segments) if a <= at <= b]
        if not inside:
            false_alerts += 1
            continue
        k = inside[0]
        if k not in detected_segments:
            detected_segments.add(k)
            delays.append((at - segments[k][0]) / 1000)
    stream = np.array([s.score for s in scores], dtype=np.float32)
    batch_scores = batch.scores[FIT_ROWS:] / batch.threshold
    stream_pred = debounce(stream > 1.0, *hold)
    # tinymodels.evaluate's own predictions (debounced over the whole file).
    batch_pred = batch.predictions[FIT_ROWS:]
    return FileResult(
        name=f.name,
        anomalies=len(segments),
        detected=len(detected_segments),
        delays_s=delays,
        false_alerts=false_alerts,
        max_score_diff=float(np.max(np.abs(stream - batch_scores))) if stream.size else 0.0,
        stream_counts=point_counts(f.anomaly[test], stream_pred),
        batch_counts=point_counts(f.anomaly[test], batch_pred),
    )


def render(results: list[FileResult]) -> Table:
    table = Table(title="SKAB through the streaming pipeline + alert engine (default anomaly rule)")
    for col in (
        "file",
        "anomalies",
        "detected",
        "delay s",
        "false alerts",
        "max |Δscore|",
        "F1 stream",
        "F1 evaluate",
    ):
        table.add_column(col, justify="left" if col == "file" else "right")
    for r in results:
        table.add_row(
            r.name,
            str(r.anomalies),
            str(r.detected),
            ", ".join(f"{d:.0f}" for d in r.delays_s) or "-",
            str(r.false_alerts),
            f"{r.max_score_diff:.2e}",
            f"{r.stream_counts.f1:.3f}",
            f"{r.batch_counts.f1:.3f}",
        )
    return table


async def run(data: Path, quick: bool) -> list[FileResult]:
    files = labelled_files(data)
    if quick:
        step = max(len(files) // QUICK_FILES, 1)
        files = files[::step][:QUICK_FILES]
    model = load_model()
    cfg = model.feature_config
    assert cfg is not None
    results = []
    for path in files:
        f = load_skab_csv(path, path.relative_to(data).as_posix())
        node_id = "skab-" + f.name.removesuffix(".csv").replace("/", "-")
        scores, events = await replay_file(f, node_id)
        batch = model.score_frame(f.values, FIT_ROWS)
        results.append(assess(f, scores, events, batch, (cfg.hold_on, cfg.hold_off)))
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/skab"))
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_FILES} files spread over the set")
    args = ap.parse_args(argv)
    if not labelled_files(args.data):
        raise SystemExit(f"{args.data}: no labelled SKAB CSV files found; pass --data DIR")
    started = time.perf_counter()
    results = asyncio.run(run(args.data, args.quick))
    elapsed = time.perf_counter() - started
    Console(width=130).print(render(results))
    stream = sum((r.stream_counts for r in results), PointCounts())
    batch = sum((r.batch_counts for r in results), PointCounts())
    worst = max(r.max_score_diff for r in results)
    print(
        f"agreement with the batch scorer: max |Δscore| {worst:.2e} (threshold units); "
        f"pointwise F1 streaming {stream.f1:.4f} vs tinymodels.evaluate {batch.f1:.4f} "
        f"(FAR {stream.far:.4f} vs {batch.far:.4f}); {elapsed:.1f} s"
    )
    anomalies = sum(r.anomalies for r in results)
    detected = sum(r.detected for r in results)
    delays = [d for r in results for d in r.delays_s]
    median = statistics.median(delays) if delays else float("nan")
    false_alerts = sum(r.false_alerts for r in results)
    print(
        f"RESULT alert_quality files={len(results)} detected={detected}/{anomalies} "
        f"median_delay_s={median:.1f} false_alerts={false_alerts}"
    )


if __name__ == "__main__":
    main()
