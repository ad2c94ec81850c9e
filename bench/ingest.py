"""End-to-end MQTT ingest rate of the gateway against a plain aiomqtt subscriber.

Method (same broker, same run, so the ratio survives a noisy shared machine):
1. A persistent MQTT session is registered for the consumer's client id, then the
   publisher fills the broker with N messages for it while the consumer is away.
2. The consumer connects and drains the backlog; the clock runs from its connect to
   the Nth message (baseline: a bare aiomqtt subscriber that only counts) or to the
   Nth reading committed in the journal (the gateway: decode, validate, journal in
   SQLite WAL with synchronous=FULL, PUBACK after commit, acks back to the nodes).
This measures the consumer alone, not how fast one publisher can publish.

Run: python -m bench.ingest [--quick]
Last line: RESULT ingest ratio_vs_aiomqtt=<x> batched_readings_per_s=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho

from gateway.app import Gateway, freeze_startup_heap
from gateway.config import load_config
from gateway.protocol.messages import Channel, ReadingBatch, Sample, TimeBase
from gateway.protocol.mqtt_topics import format_topic, uplink_filters
from gateway.protocol.payload import encode_message
from tests.fixtures.servers import Mosquitto

SITE = "bench"
CHANNELS = (Channel("current", "A"), Channel("pressure", "bar"), Channel("temp", "degC"))


def make_payloads(n_messages: int, per_message: int, nodes: int = 20) -> list[tuple[str, bytes]]:
    out = []
    seqs = dict.fromkeys(range(nodes), 1)
    for i in range(n_messages):
        node = i % nodes
        seq = seqs[node]
        seqs[node] += per_message
        samples = tuple(
            Sample(1000 * (seq + k), (4.2 + k * 0.01, 1.5, 41.0)) for k in range(per_message)
        )
        msg = ReadingBatch(f"node-{node}", 7, seq, TimeBase.UPTIME_MS, CHANNELS, samples)
        out.append((format_topic(SITE, f"node-{node}", "readings"), encode_message(msg)))
    return out


def register_session(broker: Mosquitto, client_id: str) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.connect(broker.host, broker.port)
    client.loop_start()
    info = client.subscribe([(f, 1) for f in uplink_filters(SITE)])
    time.sleep(0.2)
    assert info[0] == paho.MQTT_ERR_SUCCESS
    client.disconnect()
    client.loop_stop()


def fill_broker(broker: Mosquitto, payloads: list[tuple[str, bytes]]) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in payloads]
    for info in infos:
        info.wait_for_publish(timeout=60)
    client.disconnect()
    client.loop_stop()


async def raw_consumer(broker: Mosquitto, client_id: str, n_messages: int) -> float:
    start = time.perf_counter()
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=client_id, clean_session=False
    ) as client:
        await client.subscribe([(f, 1) for f in uplink_filters(SITE)])
        count = 0
        async for _ in client.messages:
            count += 1
            if count == n_messages:
                break
    return time.perf_counter() - start


async def gateway_consumer(
    broker: Mosquitto, client_id: str, n_readings: int, data_dir: Path, *, with_scoring: bool
) -> float:
    cfg = load_config(
        data_dir=str(data_dir),
        site=SITE,
        metrics={"enabled": False},
        mqtt={"enabled": True, "url": broker.url, "client_id": client_id},
        queue={"max_messages": 20_000},
        journal={"max_commit_messages": 5000},
        # Scoring is downstream of the journal and has its own bench (bench.alert_latency);
        # --with-scoring adds it here to see what it costs ingest.
        scoring={"enabled": with_scoring},
    )
    gateway = Gateway(cfg)
    task = asyncio.create_task(gateway.run(), name="bench:gateway")
    # The clock starts once the journal file exists: from there on, as for the raw client,
    # it covers connect, subscribe and draining the backlog (creating a fresh SQLite file is
    # a one-off start-up cost, not ingest).
    await gateway.writer.ready.wait()
    start = time.perf_counter()
    try:
        while sum(gateway.metrics.readings_in.values()) < n_readings:
            if task.done():
                task.result()
            await asyncio.sleep(0.002)
        return time.perf_counter() - start
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass(frozen=True)
class Workload:
    label: str
    n_messages: int
    per_message: int


def measure(
    broker: Mosquitto, workdir: Path, work: Workload, consumer: str, *, with_scoring: bool = False
) -> float:
    n_messages, per_message = work.n_messages, work.per_message
    client_id = f"bench-{work.label}-{consumer}"
    register_session(broker, client_id)
    fill_broker(broker, make_payloads(n_messages, per_message))
    # Both consumers start from the same heap, frozen as `fieldgate run` freezes its own
    # after start-up; otherwise each full GC walks everything this process ever imported.
    freeze_startup_heap()
    if consumer == "raw":
        seconds = asyncio.run(raw_consumer(broker, client_id, n_messages))
    else:
        seconds = asyncio.run(
            gateway_consumer(
                broker,
                client_id,
                n_messages * per_message,
                workdir / work.label,
                with_scoring=with_scoring,
            )
        )
    rate = n_messages * per_message / seconds
    print(f"  {work.label:<28} {consumer:<8} {n_messages * per_message:>9} readings "
          f"in {seconds:6.2f} s = {rate:>10,.0f} readings/s")  # fmt: skip
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller run, under a minute")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (median)")
    parser.add_argument(
        "--with-scoring", action="store_true", help="gateway model scores every committed row"
    )
    args = parser.parse_args()
    single_n = 20_000 if args.quick else 50_000
    batched_n, per_batch = (400, 250) if args.quick else (2_000, 250)
    # Three alternating rounds even when quick: single rounds on a shared machine scatter
    # by +-15 %, and the median of three is what gets reported.
    rounds = args.rounds or 3

    with tempfile.TemporaryDirectory(prefix="fieldgate-bench-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir=workdir / "mosquitto")
        broker.start()
        try:
            raw_rates, gw_rates, batched = [], [], []
            for r in range(rounds):
                print(f"round {r + 1}/{rounds}")
                single = Workload(f"single-{r}", single_n, 1)
                raw_rates.append(measure(broker, workdir, single, "raw"))
                gw_rates.append(
                    measure(broker, workdir, single, "gateway", with_scoring=args.with_scoring)
                )
                batched.append(
                    measure(
                        broker,
                        workdir,
                        Workload(f"batched-{r}", batched_n, per_batch),
                        "gateway",
                        with_scoring=args.with_scoring,
                    )
                )
        finally:
            broker.stop()
    ratios = sorted(g / b for g, b in zip(gw_rates, raw_rates, strict=True))
    ratio = ratios[len(ratios) // 2]
    batched_rate = sorted(batched)[len(batched) // 2]
    print(f"single-reading messages: gateway/aiomqtt = {ratio:.2f} (median of {rounds})")
    print(f"batched ({per_batch}/message): {batched_rate:,.0f} readings/s committed")
    print(f"RESULT ingest ratio_vs_aiomqtt={ratio:.3f} batched_readings_per_s={batched_rate:.0f}")


if __name__ == "__main__":
    main()
