"""Dashboard response times with 500 nodes and a week of history while ingest runs.

Method:
1. A journal is filled with a week of history for 500 nodes (one 3-sample reading batch per
   node every 10 minutes, a status report every hour; ``--quick``: one day) and the alert
   store with a week of alerts (raised, half acknowledged, most cleared; a few still open).
2. A real Gateway starts on that data with the dashboard enabled. Ingest runs throughout:
   every node sends one reading batch a second (500 batches/s) straight into the gateway's
   ingest queue (the transport adapters are left out; the journal, scoring pipeline and
   alert engine do their real work).
3. A signed-in client asks for each page and API call in turn, ``rounds`` times, over
   loopback; the time is from request sent to response read (an upper bound on server
   time). Baseline in the same run: the sign-in page, which renders a template and reads
   nothing, so ``ratio`` says what the reads cost on top of serving a page at all.

Run: python -m bench.dashboard [--quick]
Last line: RESULT dashboard p95_ms=<x> rss_mb=<y> ratio_vs_login=<r>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from dashboards.users import Role, UserStore, web_db_path
from gateway.app import Gateway
from gateway.config import load_config
from gateway.events import Alert, AlertEvent, AlertEventKind, AlertState, Severity
from gateway.ingest import Envelope
from gateway.protocol.messages import Channel, ReadingBatch, Sample, Status, TimeBase, Transport
from gateway.store.alerts import AlertStore, alerts_path_for
from gateway.store.journal import Journal
from gateway.store.journal_reader import JournalReader

NODES = 500
CHANNELS = (
    Channel("current", "A"), Channel("pressure", "bar"), Channel("flow", "l/min"),
    Channel("temperature", "degC"), Channel("vib_rms", "mm/s"),
)  # fmt: skip
PASSWORD = "bench-password-1"
DAY_MS = 86_400_000


def _batch(node: str, seq: int, t_ms: int, rng: random.Random) -> ReadingBatch:
    samples = tuple(
        Sample(t_ms + k * 100, (2.2 + rng.random() * 0.1, 1.0, 125.0, 54.0, 0.6)) for k in range(3)
    )
    return ReadingBatch(node, 1, seq, TimeBase.UNIX_MS, CHANNELS, samples)


def _status(node: str, seq: int, t_ms: int) -> Status:
    return Status(node, 1, seq, TimeBase.UNIX_MS, t_ms, 1000, 4100, -60, 47000, "bench/1", 0)


def fill_journal(path: Path, days: float, now_ms: int) -> tuple[int, int]:
    """History for every node: a batch every 10 min, a status every hour.

    Returns the readings written and the highest seq any node used, so that live ingest can
    continue each node's sequence (a jump past journal.max_seq_jump is refused as forged)."""
    rng = random.Random(1)
    journal = Journal(path, synchronous="NORMAL")
    journal.open()
    start = now_ms - int(days * DAY_MS)
    step = 600_000
    seqs = dict.fromkeys(range(NODES), 1)
    readings = 0
    try:
        for t in range(start, now_ms - 60_000, step):
            envelopes = []
            for n in range(NODES):
                node = f"pump-{n:03d}"
                envelopes.append(Envelope(_batch(node, seqs[n], t, rng), Transport.MQTT, t + 400))
                seqs[n] += 3
                readings += 3
                if (t - start) % 3_600_000 == 0:
                    envelopes.append(Envelope(_status(node, seqs[n], t), Transport.MQTT, t + 400))
                    seqs[n] += 1
            journal.commit(envelopes)
    finally:
        journal.close()
    return readings, max(seqs.values())


def fill_alerts(path: Path, days: float, now_ms: int) -> int:
    rng = random.Random(2)
    events = []
    start = now_ms - int(days * DAY_MS)
    count = int(days * 400)  # ~400 alerts a day across the site
    for i in range(count):
        node = f"pump-{rng.randrange(NODES):03d}"
        raised = start + int(i * (now_ms - start) / count)
        key = f"flow_low:{node}"
        base = Alert(f"{key}:{i + 1}", key, "flow_low", node, Severity.CRITICAL,
                     AlertState.RAISED, "flow 4.2 <= 60", 4.2, raised)  # fmt: skip
        events.append(AlertEvent(f"{base.alert_id}:raised:1", AlertEventKind.RAISED, raised, base))
        if i % 2 == 0:
            acked = dataclasses.replace(
                base, state=AlertState.ACKNOWLEDGED, acked_at_ms=raised + 60_000,
                acked_by="operator", ack_comment="on it",
            )  # fmt: skip
            events.append(
                AlertEvent(
                    f"{base.alert_id}:acknowledged:1",
                    AlertEventKind.ACKNOWLEDGED,
                    raised + 60_000,
                    acked,
                )
            )
            base = acked
        if i < count - 10:
            cleared = dataclasses.replace(
                base, state=AlertState.CLEARED, cleared_at_ms=raised + 600_000
            )
            events.append(
                AlertEvent(
                    f"{base.alert_id}:cleared:1", AlertEventKind.CLEARED, raised + 600_000, cleared
                )
            )
    with AlertStore(path, synchronous="NORMAL") as store:
        for k in range(0, len(events), 1000):
            store.record(events[k : k + 1000])
    return count


async def ingest(gateway: Gateway, stop: asyncio.Event, counter: list[int], seq: int) -> None:
    """Every node sends one 3-sample batch a second from `seq` on, through the real ingest queue."""
    rng = random.Random(3)
    seqs = dict.fromkeys(range(NODES), seq + 1)
    while not stop.is_set():
        tick = time.monotonic()
        now = time.time_ns() // 1_000_000
        for n in range(NODES):
            batch = _batch(f"pump-{n:03d}", seqs[n], now, rng)
            seqs[n] += 3
            await gateway.queue.put(Envelope(batch, Transport.MQTT, now))
            counter[0] += 1
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))


async def committed(journal: Path) -> int:
    def count() -> int:
        reader = JournalReader(journal)
        try:
            return reader.count_readings()
        finally:
            reader.close()

    return await asyncio.to_thread(count)


async def sign_in(client: httpx.AsyncClient) -> None:
    form = await client.get("/login")
    csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    response = await client.post(
        "/login", data={"username": "bench", "password": PASSWORD, "csrf": csrf, "next": "/"}
    )
    assert response.status_code == 303, response.text


async def measure(
    client: httpx.AsyncClient, paths: list[str], rounds: int
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(rounds):
        for path in paths:
            t0 = time.perf_counter()
            response = await client.get(path)
            times[path].append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200, (path, response.status_code)
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) >= 20 else max(values)


async def run(quick: bool) -> None:
    days = 1.0 if quick else 7.0
    rounds = 8 if quick else 30
    work = Path(tempfile.mkdtemp(prefix="fieldgate-bench-dash-"))
    cfg = load_config(
        data_dir=str(work / "var"), site="bench", mqtt={"enabled": False},
        metrics={"enabled": False}, web={"enabled": True, "port": 0},
        journal={"synchronous": "NORMAL"},
    )  # fmt: skip
    now = time.time_ns() // 1_000_000
    t0 = time.perf_counter()
    readings, last_seq = fill_journal(cfg.journal_path, days, now)
    alerts = fill_alerts(alerts_path_for(cfg.journal_path), days, now)
    users = UserStore(web_db_path(cfg.data_dir))
    users.add("bench", Role.ADMIN, PASSWORD)
    users.close()
    size_mb = cfg.journal_path.stat().st_size / 1e6
    print(f"history: {NODES} nodes, {days:g} days, {readings} readings, {alerts} alerts, "
          f"journal {size_mb:.0f} MB, made in {time.perf_counter() - t0:.1f} s")  # fmt: skip

    gateway = Gateway(cfg)
    stop = asyncio.Event()
    sent = [0]  # batches handed to the ingest queue
    async with asyncio.TaskGroup() as tg:
        service = tg.create_task(gateway.run(), name="bench:gateway")
        try:
            await asyncio.wait_for(gateway.web_ready.wait(), 30)
            assert gateway.web_view is not None
            url = f"http://127.0.0.1:{gateway.web_view.bound_port[0]}"
            feeder = tg.create_task(ingest(gateway, stop, sent, last_seq), name="bench:ingest")
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                await sign_in(client)
                await asyncio.sleep(2)  # ingest under way
                node = "pump-007"
                paths = [
                    "/", "/nodes", f"/nodes/{node}", "/alerts", "/models", "/settings",
                    "/api/health", "/api/nodes", f"/api/nodes/{node}",
                    f"/api/nodes/{node}/readings?limit=300", "/api/alerts", "/api/alerts/history",
                    "/api/models", "/api/jobs",
                ]  # fmt: skip
                # Ingest alone for a while, then ingest while the dashboard is busy.
                c0, t_idle = await committed(cfg.journal_path), time.perf_counter()
                await asyncio.sleep(5 if quick else 15)
                c1, t_busy = await committed(cfg.journal_path), time.perf_counter()
                idle_rate = (c1 - c0) / (t_busy - t_idle)
                login = await measure(client, ["/login"], rounds * 3)
                times = await measure(client, paths, rounds)
                rate = (await committed(cfg.journal_path) - c1) / (time.perf_counter() - t_busy)
            stop.set()
            await feeder
        finally:
            rss_mb = psutil.Process().memory_info().rss / 1e6
            service.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await service

    print(f"{'request':45s} {'p50 ms':>8s} {'p95 ms':>8s}")
    for path, values in [("/login (baseline)", login["/login"]), *times.items()]:
        print(f"{path:45s} {statistics.median(values):8.1f} {p95(values):8.1f}")
    everything = [v for values in times.values() for v in values]
    overall = p95(everything)
    base = p95(login["/login"])
    print(f"ingest committed: {idle_rate:.0f} readings/s alone, {rate:.0f} readings/s while the "
          f"dashboard is measured (offered {NODES * 3}/s); process RSS {rss_mb:.0f} MB; "
          f"CPUs {psutil.cpu_count()}")  # fmt: skip
    print(
        f"RESULT dashboard p95_ms={overall:.1f} rss_mb={rss_mb:.0f} ratio_vs_login={overall / base:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help="one day of history, fewer rounds (< 60 s)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.quick))


if __name__ == "__main__":
    main()
