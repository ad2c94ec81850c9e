"""kill -9 of the gateway at random instants loses nothing acknowledged and doubles nothing.

The gateway runs as a real process (``python -m gateway.cli run``) fed by MQTT nodes
that behave like firmware: they number readings, keep what is not acknowledged and
resend it. The test kills the gateway with SIGKILL repeatedly while they send, then
checks the journal against what each node saw acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from gateway.protocol.messages import Ack, Channel, ReadingBatch, Sample, TimeBase
from gateway.protocol.mqtt_topics import format_topic
from gateway.protocol.payload import decode_message, encode_message
from tests.fixtures.servers import Mosquitto

CH = (Channel("current", "A"),)
BATCH = 5
BOOT = 42


@dataclass
class FirmwareLikeNode:
    """Numbers readings, keeps unacknowledged batches and resends them until acked."""

    node_id: str
    next_seq: int = 1
    acked: int = 0
    unacked: dict[int, bytes] = field(default_factory=dict)

    def new_batch(self) -> tuple[int, bytes]:
        seq = self.next_seq
        self.next_seq += BATCH
        samples = tuple(Sample(seq + i, (float(seq + i),)) for i in range(BATCH))
        payload = encode_message(
            ReadingBatch(self.node_id, BOOT, seq, TimeBase.UPTIME_MS, CH, samples)
        )
        self.unacked[seq] = payload
        return seq, payload

    def on_ack(self, ack: Ack) -> None:
        assert ack.node_id == self.node_id
        assert ack.boot_id == BOOT
        assert ack.up_to_seq < self.next_seq, "acked a seq the node never sent"
        self.acked = max(self.acked, ack.up_to_seq)
        for seq in [s for s in self.unacked if s + BATCH - 1 <= self.acked]:
            del self.unacked[seq]


async def run_node(node: FirmwareLikeNode, broker: Mosquitto, site: str, stop: asyncio.Event,
                   batches: int) -> None:  # fmt: skip
    topic = format_topic(site, node.node_id, "readings")
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"{site}-{node.node_id}") as c:
        await c.subscribe(format_topic(site, node.node_id, "ack"), qos=1)

        async def receive_acks() -> None:
            async for message in c.messages:
                msg = decode_message(bytes(message.payload))
                assert isinstance(msg, Ack)
                node.on_ack(msg)

        async with asyncio.TaskGroup() as tg:
            acks = tg.create_task(receive_acks(), name=f"node:{node.node_id}:acks")
            tick = 0
            while not (stop.is_set() and not node.unacked and node.next_seq > batches * BATCH):
                if node.next_seq <= batches * BATCH:
                    _, payload = node.new_batch()
                    await c.publish(topic, payload, qos=1)
                tick += 1
                if tick % 25 == 0:  # resend what is still unacknowledged
                    for payload in list(node.unacked.values())[:20]:
                        await c.publish(topic, payload, qos=1)
                await asyncio.sleep(0.01)
            acks.cancel()


def start_gateway(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "kills",
    [pytest.param(5, id="5-kills"), pytest.param(40, id="40-kills", marks=pytest.mark.slow)],
)
async def test_sigkill_loses_nothing_acknowledged(
    mosquitto: Mosquitto, mqtt_prefix: str, tmp_path: Path, kills: int
) -> None:
    config = tmp_path / "gateway.toml"
    db = tmp_path / "journal.db"
    config.write_text(
        f'site = "{mqtt_prefix}"\ndata_dir = "{tmp_path}"\nlog_level = "WARNING"\n'
        f'[mqtt]\nurl = "{mosquitto.url}"\nclient_id = "gw-{mqtt_prefix}"\n'
        f"ack_interval_s = 0.01\n[metrics]\nenabled = false\n"
    )
    nodes = [FirmwareLikeNode(f"crash-{i}") for i in range(3)]
    stop = asyncio.Event()
    rng = random.Random(kills)
    batches = 60 * (kills + 1)
    proc = None
    async with asyncio.TaskGroup() as tg:
        for node in nodes:
            tg.create_task(run_node(node, mosquitto, mqtt_prefix, stop, batches), name=node.node_id)
        try:
            for _ in range(kills):
                proc = start_gateway(config)
                await asyncio.sleep(rng.uniform(0.4, 1.2))
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
            proc = start_gateway(config)
            stop.set()  # nodes stop producing and wait until everything is acked
            async with asyncio.timeout(60):
                while any(n.unacked or n.next_seq <= batches * BATCH for n in nodes):
                    await asyncio.sleep(0.1)
        finally:
            stop.set()
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 10)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT node_id, seq FROM readings WHERE boot_id = ?", (BOOT,))
        stored: dict[str, list[int]] = {}
        for node_id, seq in rows:
            stored.setdefault(node_id, []).append(seq)
    checked = 0
    for node in nodes:
        seqs = sorted(stored.get(node.node_id, []))
        assert len(seqs) == len(set(seqs)), f"{node.node_id}: a reading stored twice"
        assert node.acked == batches * BATCH
        assert seqs == list(range(1, node.acked + 1)), f"{node.node_id}: acked reading missing"
        checked += len(seqs)
    print(f"{kills} SIGKILLs, {checked} acknowledged readings checked: none lost, none doubled")
