"""CPU per reading by stage, for bench.alert_latency (timing wrappers; the gateway is unchanged).

The journal, scoring and alert engine each own a thread, so their CPU is their thread's. The
event loop does everything else; the wrappers below split its CPU (``time.thread_time_ns``
around the loop's parts of the alert path), and what is left on the loop is the sources
(MQTT and serial reading, decoding, the ingest queue) and the loop itself.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.alerts.runner import AlertRunner
from gateway.pipeline.pipeline import ScoringPipeline
from gateway.store.writer import JournalWriter

# (class, method, stage): loop-side parts of the alert path. Nested calls are subtracted from
# the caller (on_commit runs inside _after_commit), so the stages add up.
LOOP_STAGES: tuple[tuple[type, str, str], ...] = (
    (JournalWriter, "_after_commit", "loop: acks + commit bookkeeping"),
    (ScoringPipeline, "on_commit", "loop: pipeline on_commit (readings, rows)"),
    (ScoringPipeline, "_on_scores", "loop: scores in (fusion, sinks)"),
    (AlertRunner, "submit", "loop: alert engine (since issue 17)"),
    (AlertRunner, "_emit", "loop: alert events to outputs"),
)
THREAD_STAGES = (
    ("journal", "journal thread: commit"),
    ("scoring", "scoring thread: windows, statistics, model"),
    ("alerts", "alerts thread: alert store (+ engine before 17)"),
)
SOURCES = "loop: sources, decode, ingest, loop overhead"


class StageCpu:
    """Accumulates loop CPU per stage while ``recording``."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = {stage: 0 for _, _, stage in LOOP_STAGES}
        self.recording = False
        self._stack: list[int] = []  # child CPU of the enclosing wrapped calls

    def install(self) -> None:
        for cls, name, stage in LOOP_STAGES:
            setattr(cls, name, self._wrap(getattr(cls, name), stage))

    def _wrap(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append(0)
            t0 = time.thread_time_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time_ns() - t0
                children = self._stack.pop()
                if self._stack:
                    self._stack[-1] += spent
                if self.recording:
                    self.ns[stage] += spent - children

        return timed

    def report(self, threads_s: dict[str, float], readings: int) -> list[tuple[str, float]]:
        """(stage, CPU µs per committed reading), the loop's rest as the sources."""
        if readings <= 0:
            return []
        out: list[tuple[str, float]] = []
        loop_wrapped_s = 0.0
        for stage, ns in self.ns.items():
            out.append((stage, ns / 1e3 / readings))
            loop_wrapped_s += ns / 1e9
        out.insert(
            0, (SOURCES, (threads_s.get("MainThread", 0.0) - loop_wrapped_s) * 1e6 / readings)
        )
        for thread, stage in THREAD_STAGES:
            out.append((stage, threads_s.get(thread, 0.0) * 1e6 / readings))
        known = {"MainThread"} | {t for t, _ in THREAD_STAGES}
        rest = sum(v for k, v in threads_s.items() if k not in known)
        out.append(("other threads", rest * 1e6 / readings))
        out.append(("total", sum(v for _, v in out)))
        return out


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) per thread of this process, by thread name."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = names.get(int(task.name)) or (task / "comm").read_text().strip()
            name = name.rstrip("_0123456789") or name
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def thread_runqueue_wait_s() -> dict[str, float]:
    """Seconds each thread of this process spent runnable but waiting for a CPU (schedstat).

    Waiting for the GIL is not in here (a thread blocked on it sleeps): a stage that is slow
    while its thread hardly waited for a CPU was waiting for the GIL (or I/O).
    """
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            wait_ns = int((task / "schedstat").read_text().split()[1])
            name = names.get(int(task.name)) or (task / "comm").read_text().strip()
            name = name.rstrip("_0123456789") or name
            out[name] = out.get(name, 0.0) + wait_ns / 1e9
    return out


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return float(sum(fields) - idle), float(sum(fields))
