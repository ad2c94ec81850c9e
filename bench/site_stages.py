"""Where a site's CPU goes, per reading: bench.site's load against a gateway with timed stages.

Method: the load of bench.site (private mosquitto; one publisher process playing N nodes at
1 reading/s, QoS 1, pre-encoded; scoring with a short calibration and the default alert
rules on). The gateway is the real service (``Gateway`` + ``run_until_signalled``, as
``fieldgate run`` starts it) in a subprocess (``python -m bench.site_stages --serve``), with
a few methods wrapped to add up the **CPU time of the calling thread**
(``time.thread_time_ns``; timing only, the gateway's code is unchanged; a stage nested in
another counts in the outer one only), and every thread's CPU read from ``/proc``. All
figures are CPU microseconds per committed reading over the measured window, after a
warm-up; ``--min-commit-interval-s`` sets ``journal.min_commit_interval_s`` for the run.

Stages:

* loop, MQTT read: packet parse, decode, admission, the ingest queue
  (``MqttConnection.data_received``; on older gateways paho's, ``PahoConnection._read``)
* loop, MQTT write rounds: queued PUBACKs and acks, one ``send`` each
  (``MqttConnection._flush``; ``PahoConnection._write_round``)
* loop, acks built and queued: topic and payload, the connection's publish
  (``MqttSource._ack_publish``, ``MqttConnection.publish`` / ``PahoConnection.publish``)
* loop, after each commit: acks to the mailbox, PUBACKs released, the commit listeners (the
  scoring pipeline's ``on_commit``) (``JournalWriter._after_commit``)
* loop, scores in: fusion, the alert engine's evaluation, the sinks
  (``ScoringPipeline._on_scores``)
* journal thread, ``Journal.commit``: SQLite and the fsync's system time
* scoring thread, ``BatchScorer.score``: windows, statistics, the model, attribution (the
  rest of the thread is the executor's hand-off)
* gc: the cyclic garbage collector, in whichever thread it runs (``gc.callbacks``)

Run: python -m bench.site_stages [--quick] [--nodes N] [--min-commit-interval-s X]
Last line: RESULT site_stages nodes=<n> us_per_reading=<x> loop_us=<x> journal_us=<x>
scoring_us=<x>
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.site import committed_readings, proc_cpu_s, start_fleet, stop_gateway, write_config
from tests.fixtures.servers import Mosquitto

_CPU_NS: dict[str, int] = {}
_CALLS: dict[str, int] = {}
_NESTED = threading.local()


def _timed(cls: type, name: str, label: str) -> None:
    """Wrap ``cls.name`` to add its thread CPU time to ``label`` (if the method exists:
    the same bench times older versions of the gateway)."""
    fn: Callable[..., Any] | None = getattr(cls, name, None)
    if fn is None:
        return

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if getattr(_NESTED, "on", False):
            return fn(*args, **kwargs)
        _NESTED.on = True
        start = time.thread_time_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            _NESTED.on = False
            _CPU_NS[label] = _CPU_NS.get(label, 0) + time.thread_time_ns() - start
            _CALLS[label] = _CALLS.get(label, 0) + 1

    setattr(cls, name, wrapper)


def _time_gc() -> None:
    """Add the CPU time of the cyclic garbage collector (any thread) as a stage."""
    started: dict[int, int] = {}
    label = "gc: cyclic collections (any thread)"

    def on_gc(phase: str, info: dict[str, int]) -> None:
        me = threading.get_ident()
        if phase == "start":
            started[me] = time.thread_time_ns()
        elif me in started:
            _CPU_NS[label] = _CPU_NS.get(label, 0) + time.thread_time_ns() - started.pop(me)
            _CALLS[label] = _CALLS.get(label, 0) + 1

    gc.callbacks.append(on_gc)


def _thread_cpu_s() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by thread name."""
    names = {str(t.native_id): t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        name = names.get(task.name, f"thread {task.name}")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def serve(config: Path, out: Path) -> None:
    """The gateway with its stages timed; writes the counters to ``out`` twice a second."""
    from gateway.app import Gateway, freeze_startup_heap, run_until_signalled
    from gateway.config import load_config
    from gateway.pipeline.pipeline import ScoringPipeline
    from gateway.pipeline.scoring import BatchScorer
    from gateway.sources.mqtt import MqttSource

    try:  # the gateway's own MQTT connection; paho's on older gateways
        from gateway.sources.mqtt_connection import MqttConnection as conn_cls

        read, write = "data_received", "_flush"
    except ImportError:
        from gateway.sources.mqtt_loop import PahoConnection as conn_cls  # type: ignore[no-redef]

        read, write = "_read", "_write_round"
    from gateway.store.journal import Journal
    from gateway.store.writer import JournalWriter

    _timed(conn_cls, read, "loop: MQTT read (parse, decode, queue)")
    _timed(conn_cls, write, "loop: MQTT write rounds (PUBACKs, acks)")
    _timed(MqttSource, "_ack_publish", "loop: acks built and queued")
    _timed(MqttSource, "_payload_for", "loop: acks built and queued")  # before _ack_publish
    _timed(conn_cls, "publish", "loop: acks built and queued")
    _timed(JournalWriter, "_after_commit", "loop: after each commit (incl. on_commit)")
    _timed(Journal, "commit", "journal: Journal.commit (SQLite, fsync)")
    _timed(ScoringPipeline, "_on_scores", "loop: scores in (fusion, alert engine)")
    _timed(BatchScorer, "score", "scoring: BatchScorer.score")
    gateway = Gateway(load_config(config))
    _time_gc()

    def dump() -> None:
        while True:
            time.sleep(0.5)
            data = {
                "cpu_ns": dict(_CPU_NS),
                "calls": dict(_CALLS),
                "threads": _thread_cpu_s(),
                "commits": gateway.metrics.commits,
            }
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(out)

    threading.Thread(target=dump, name="bench-stage-dump", daemon=True).start()
    freeze_startup_heap()
    asyncio.run(run_until_signalled(gateway))


def report(before: dict[str, Any], after: dict[str, Any], readings: int, seconds: float) -> None:
    commits = after["commits"] - before["commits"]
    print(f"commits: {commits / seconds:.0f}/s, {readings / max(commits, 1):.1f} readings each")
    print("CPU per committed reading, by thread:")
    for name, cpu in sorted(after["threads"].items(), key=lambda kv: -kv[1]):
        spent = cpu - before["threads"].get(name, 0.0)
        if spent > 0.01 and name != "bench-stage-dump":
            print(f"  {name:<44} {1e6 * spent / readings:7.0f} us")
    print("CPU per committed reading, by stage:")
    for label in sorted(after["cpu_ns"]):
        spent = after["cpu_ns"][label] - before["cpu_ns"].get(label, 0)
        calls = after["calls"][label] - before["calls"].get(label, 0)
        print(f"  {label:<44} {spent / 1e3 / readings:7.1f} us"
              f"  ({calls / seconds:5.0f} calls/s, {spent / 1e3 / max(calls, 1):6.1f} us each)")  # fmt: skip


def thread_us(before: dict[str, Any], after: dict[str, Any], prefix: str, readings: int) -> float:
    spent = sum(
        cpu - before["threads"].get(name, 0.0)
        for name, cpu in after["threads"].items()
        if name.startswith(prefix)
    )
    return 1e6 * spent / readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="15 s of load instead of 45 s")
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--min-commit-interval-s", type=float, default=None)
    parser.add_argument("--serve", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), Path(args.serve[1]))
        return
    window_s, warmup_s = (15, 8) if args.quick else (45, 8)
    env = dict(os.environ)
    if args.min_commit_interval_s is not None:
        env["FIELDGATE_JOURNAL__MIN_COMMIT_INTERVAL_S"] = str(args.min_commit_interval_s)
    with tempfile.TemporaryDirectory(prefix="bench-site-stages-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "mosquitto")
        broker.start()
        out = workdir / "stages.json"
        config = write_config(workdir, broker)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "bench.site_stages", "--serve", str(config), str(out)],
            stderr=(workdir / "gateway.log").open("wb"),
            env=env,
        )
        try:
            journal = workdir / "var" / "journal.db"
            deadline = time.monotonic() + 60
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2)
            fleet = start_fleet(
                broker.host, broker.port, nodes=args.nodes, seconds=warmup_s + window_s + 3, seed=1
            )
            time.sleep(warmup_s)
            before, cpu0 = json.loads(out.read_text()), proc_cpu_s(gateway.pid)
            readings0, t0 = committed_readings(journal), time.monotonic()
            time.sleep(window_s)
            after, cpu1 = json.loads(out.read_text()), proc_cpu_s(gateway.pid)
            readings, seconds = committed_readings(journal) - readings0, time.monotonic() - t0
            fleet.join(timeout=30)
        finally:
            stop_gateway(gateway)
            broker.stop()
    readings = max(readings, 1)
    total_us = 1e6 * (cpu1 - cpu0) / readings
    print(f"nodes {args.nodes}: {readings / seconds:.0f} readings/s committed over {seconds:.0f} s;"
          f" gateway {(cpu1 - cpu0) / seconds:.3f} core = {total_us:.0f} us per reading")  # fmt: skip
    report(before, after, readings, seconds)
    loop_us = thread_us(before, after, "MainThread", readings)
    journal_us = thread_us(before, after, "journal", readings)
    scoring_us = thread_us(before, after, "scoring", readings)
    print(
        f"RESULT site_stages nodes={args.nodes} us_per_reading={total_us:.0f} loop_us={loop_us:.0f}"
        f" journal_us={journal_us:.0f} scoring_us={scoring_us:.0f}"
    )


if __name__ == "__main__":
    main()
