"""A hand-made JSON node, played by mosquitto's own command-line clients, reads everything
the gateway tells it: Acks and Commands come back in the form of its latest uplink
(docs/protocol.md, "Payloads: CBOR or JSON")."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.protocol.messages import (
    Ack,
    Channel,
    Command,
    CommandKind,
    ReadingBatch,
    Sample,
    TimeBase,
)
from gateway.protocol.payload import decode_message, encode_message
from tests.fixtures.gateway import gateway_config, journal_keys, wait_until
from tests.fixtures.ingest import wired_gateway
from tests.fixtures.servers import Mosquitto

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        shutil.which("mosquitto_sub") is None,
        reason="needs Debian's mosquitto-clients (deploy/setup.sh test installs it)",
    ),
]
NODE = "esp-01"

# Written by hand, as firmware with a string formatter and no CBOR library would.
JSON_BATCH = (
    '{"v":1,"type":"readings","node_id":"esp-01","boot_id":3,"seq":%d,'
    '"time_base":"uptime_ms","channels":[["temp","degC"]],'
    '"samples":[[%d,[21.5]],[%d,[21.6]]]}'
)


def json_batch(seq: int) -> str:
    return JSON_BATCH % (seq, 1000 * seq, 1000 * (seq + 1))


class MosquittoSub:
    """``mosquitto_sub`` on one topic, printing each payload as hex on its own line."""

    def __init__(self, broker: Mosquitto, topic: str, count: int) -> None:
        self._args = [
            # Line-buffered: its stdout is a pipe, and the test waits for SUBACK on it.
            *("stdbuf", "-oL", "mosquitto_sub"),
            *("-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic),
            *("-C", str(count), "-W", "30", "-d", "-F", "PAYLOAD %x"),
        ]
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> MosquittoSub:
        self._proc = await asyncio.create_subprocess_exec(
            *self._args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        # -d prints the protocol exchange; publishing before SUBACK could miss the answer.
        async with asyncio.timeout(10):
            while b"SUBACK" not in await self._line():
                pass
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()

    async def _line(self) -> bytes:
        assert self._proc is not None
        assert self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        assert line, f"mosquitto_sub ended early (exit {await self._proc.wait()})"
        return line

    async def payload(self) -> bytes:
        async with asyncio.timeout(20):
            while not (line := await self._line()).startswith(b"PAYLOAD "):
                pass
        return bytes.fromhex(line.split()[1].decode())


async def mosquitto_pub(broker: Mosquitto, topic: str, payload: str | Path) -> None:
    source = ["-f", str(payload)] if isinstance(payload, Path) else ["-m", payload]
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_pub",
        *("-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic, *source),
    )
    assert await proc.wait() == 0


def as_json(payload: bytes) -> dict[str, Any]:
    try:
        obj: dict[str, Any] = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AssertionError(f"not JSON: {payload[:40]!r}") from None
    return obj


async def test_a_json_node_gets_its_acks_and_commands_in_json_and_cbor_after_a_cbor_uplink(
    tmp_path: Path, mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    cfg = gateway_config(
        tmp_path,
        site=mqtt_prefix,
        mqtt={"enabled": True, "url": mosquitto.url, "client_id": f"gw-{mqtt_prefix}"},
    )
    topic = f"fieldgate/{mqtt_prefix}/{NODE}"
    async with wired_gateway(cfg) as (_gw, downlinks):
        async with MosquittoSub(mosquitto, f"{topic}/ack", count=1) as acks:
            await mosquitto_pub(mosquitto, f"{topic}/readings", json_batch(1))
            ack = as_json(await acks.payload())
        assert ack == {"v": 1, "type": "ack", "node_id": NODE, "boot_id": 3, "up_to_seq": 2}
        assert journal_keys(cfg) == [(NODE, 3, 1), (NODE, 3, 2)]

        await wait_until(lambda: NODE in downlinks.nodes(), what="a downlink to the node")
        async with MosquittoSub(mosquitto, f"{topic}/cmd", count=1) as commands:
            assert downlinks.send_command(
                Command(NODE, 9, CommandKind.SET_THRESHOLD, (("threshold", 0.75),))
            )
            command = as_json(await commands.payload())
        assert command == {
            "v": 1,
            "type": "cmd",
            "node_id": NODE,
            "cmd_id": 9,
            "kind": "set_threshold",
            "args": {"threshold": 0.75},
        }

        # The same node switches to CBOR: the gateway follows its latest uplink.
        cbor = tmp_path / "batch.cbor"
        samples = (Sample(3000, (21.7,)),)
        cbor.write_bytes(
            encode_message(
                ReadingBatch(NODE, 3, 3, TimeBase.UPTIME_MS, (Channel("temp", "degC"),), samples)
            )
        )
        async with MosquittoSub(mosquitto, f"{topic}/ack", count=1) as acks:
            await mosquitto_pub(mosquitto, f"{topic}/readings", cbor)
            assert decode_message(await acks.payload()) == Ack(NODE, 3, 3)
