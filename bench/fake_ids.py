"""A flood of made-up node ids over MQTT against the service as deployed (issue 14 finding 3).

Method:

* mosquitto (Debian's, private, loopback, anonymous: the attacker's case of an open broker)
  and the gateway as a separate process (``fieldgate run``), metrics on, a threshold rule
  (``flow`` above 100) and a 10-minute silence rule.
* A real node, ``pump-01``, sends a reading; the gateway's RSS is read from /proc.
* The flood: one publisher process sends one reading each for N made-up ids (default 50,000)
  on their own topics, QoS 1, pre-encoded. The run waits until the gateway has decided every
  one (admitted + refused counters on /metrics), then reads RSS again and the registry size
  (journal ``nodes`` rows); then ``pump-01`` sends ``flow = 500`` and the run waits for its
  alert in the alert history.
* Restart: the gateway is stopped (SIGTERM) and started with the silence rule at 1 s; the
  ``node_silent`` alerts in the history are counted once there are as many as registered
  nodes (or after 60 s), plus 3 s.
* Baseline, same run, same machine: the same with the bounds lifted (``nodes.max_nodes`` =
  10⁶, ``nodes.new_per_minute`` = 10⁶: the gateway before issue 14 admitted every id).

Run: python -m bench.fake_ids [--quick] [--ids N]
Last line: RESULT fake_ids ids=<n> rss_growth_mb=<x> registry=<r> silent_after_restart=<s>
baseline_rss_growth_mb=<x> baseline_registry=<r> baseline_silent_after_restart=<s>
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho

from bench.site import proc_rss_mb
from gateway.protocol.messages import Channel, ReadingBatch, Sample, TimeBase
from gateway.protocol.mqtt_topics import format_topic
from gateway.protocol.payload import encode_message
from tests.fixtures.ports import free_port
from tests.fixtures.servers import Mosquitto

SITE = "bench"
CHANNELS = (Channel("pressure", "bar"), Channel("flow", "l/min"))


def reading(node: str, seq: int, flow: float = 1.0) -> tuple[str, bytes]:
    msg = ReadingBatch(node, 1, seq, TimeBase.UPTIME_MS, CHANNELS, (Sample(seq, (1.0, flow)),))
    return format_topic(SITE, node, "readings"), encode_message(msg)


def publish(host: str, port: int, messages: list[tuple[str, bytes]], client_id: str) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def flood(host: str, port: int, ids: int) -> None:
    publish(host, port, [reading(f"fake-{i:06d}", 1) for i in range(ids)], "bench-fake-ids")


def metric(port: int, name: str) -> float:
    # A long timeout: with the bounds lifted a scrape reads 50,000 registry rows.
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60).read().decode()
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def query(db_path: Path, sql: str) -> int:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute(sql).fetchone()[0])
    finally:
        db.close()


def wait_for(what: str, predicate: object, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


@dataclass
class Outcome:
    rss_growth_mb: float
    registry: int
    silent_after_restart: int
    real_alert: bool


def write_config(
    workdir: Path, broker: Mosquitto, port: int, bounded: bool, silent_s: float
) -> Path:
    nodes = "" if bounded else "[nodes]\nmax_nodes = 1000000\nnew_per_minute = 1000000\n"
    config = workdir / "gateway.toml"
    config.write_text(
        f'site = "{SITE}"\ndata_dir = "{workdir / "var"}"\nlog_level = "ERROR"\n'
        f'[mqtt]\nurl = "{broker.url}"\nclient_id = "bench-fake-ids-gw"\n'
        f"[metrics]\nenabled = true\nport = {port}\n"
        "[scoring]\nenabled = false\n"
        "[alerts]\nuse_default_rules = false\ntick_interval_s = 0.2\n"
        '[alerts.rules.hot]\nkind = "threshold"\nchannel = "flow"\nabove = 100.0\n'
        f'[alerts.rules.silent]\nkind = "silent"\nafter_s = {silent_s}\n' + nodes
    )
    return config


def start_gateway(config: Path, log: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        stderr=log.open("ab"),
    )

    def up() -> bool:
        try:
            metric(port, "fieldgate_nodes_admitted")
        except OSError:
            return False
        return True

    wait_for("the gateway's metrics endpoint", up, 60)
    time.sleep(1.5)  # subscribed
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_once(ids: int, *, bounded: bool) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="bench-fake-ids-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "mosquitto")
        broker.start()
        port = free_port()
        log = workdir / "gateway.log"
        alerts_db = workdir / "var" / "alerts.db"
        gateway = start_gateway(write_config(workdir, broker, port, bounded, 600), log, port)
        try:
            publish(broker.host, broker.port, [reading("pump-01", 1)], "bench-real-node")
            wait_for("pump-01 admitted", lambda: metric(port, "fieldgate_nodes_admitted") >= 1)
            before = proc_rss_mb(gateway.pid)
            ctx = multiprocessing.get_context("spawn")
            attacker = ctx.Process(target=flood, args=(broker.host, broker.port, ids))
            attacker.start()
            decided = (
                "fieldgate_nodes_admitted",
                "fieldgate_nodes_refused_registry_full_total",
                "fieldgate_nodes_refused_admission_rate_total",
            )

            def all_decided() -> bool:
                return sum(metric(port, m) for m in decided) >= ids + 1

            wait_for("every made-up id decided", all_decided, 600)
            attacker.join(60)
            time.sleep(2)  # the last commits and scoring settle
            growth = proc_rss_mb(gateway.pid) - before
            publish(broker.host, broker.port, [reading("pump-01", 2, 500.0)], "bench-real-node")
            hot = "SELECT count(*) FROM alerts WHERE rule = 'hot' AND node_id = 'pump-01'"
            real_alert = True
            try:
                wait_for("pump-01's alert", lambda: query(alerts_db, hot) >= 1, 60)
            except SystemExit:
                real_alert = False
        finally:
            stop(gateway)
        registry = query(workdir / "var" / "journal.db", "SELECT count(*) FROM nodes")
        gateway = start_gateway(write_config(workdir, broker, port, bounded, 1), log, port)
        count_silent = "SELECT count(*) FROM alerts WHERE rule = 'silent'"
        try:
            # Every registered node is silent after 1 s; wait for them (up to 60 s), then 3 s
            # more for any beyond them.
            with contextlib.suppress(SystemExit):
                wait_for("node_silent", lambda: query(alerts_db, count_silent) >= registry, 60)
            time.sleep(3)
        finally:
            stop(gateway)
            broker.stop()
        silent = query(alerts_db, count_silent)
        return Outcome(growth, registry, silent, real_alert)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 ids instead of 50,000")
    parser.add_argument("--ids", type=int, default=None)
    args = parser.parse_args()
    ids = args.ids or (10_000 if args.quick else 50_000)
    base = run_once(ids, bounded=False)
    now = run_once(ids, bounded=True)
    for label, o in (("bounds lifted (baseline)", base), ("default bounds", now)):
        print(
            f"{label}: RSS +{o.rss_growth_mb:.1f} MB, registry {o.registry} nodes, "
            f"{o.silent_after_restart} node_silent after a restart, real node's alert "
            f"{'raised' if o.real_alert else 'NOT raised'}",
            flush=True,
        )
    print(
        f"RESULT fake_ids ids={ids} rss_growth_mb={now.rss_growth_mb:.1f} registry={now.registry}"
        f" silent_after_restart={now.silent_after_restart} real_alert={int(now.real_alert)}"
        f" baseline_rss_growth_mb={base.rss_growth_mb:.1f} baseline_registry={base.registry}"
        f" baseline_silent_after_restart={base.silent_after_restart}"
    )


if __name__ == "__main__":
    main()
