"""MQTT source: subscribe to ``fieldgate/<site>/+/+`` and acknowledge after commit.

Durability across the broker: the session is persistent (``clean_session=False``
with a fixed client id) and paho's manual acknowledgement is switched on, so a
QoS 1 message is PUBACKed to the broker only once the journal has committed it.
If the gateway dies before that, the broker redelivers it on reconnect and the
journal drops the copy it may already hold. aiomqtt 2.x does not expose paho's
``manual_ack``; we reach the paho client it wraps (``Client._client``) for exactly
two calls, ``manual_ack_set`` and ``ack`` (a test pins that behaviour).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from gateway.codecs.mqtt_topics import (
    decode_mqtt_payload,
    format_topic,
    parse_topic,
    uplink_filters,
)
from gateway.codecs.payload import encode_message
from gateway.config import MqttConfig
from gateway.downlink import Downlinks
from gateway.errors import CodecError
from gateway.ingest import Envelope, IngestQueue
from gateway.metrics import Metrics
from gateway.models import Ack, Command, Transport
from gateway.sources.common import AckMailbox, Admission, Backoff, now_ms

_LOGGER = logging.getLogger(__name__)
UPLINK_KINDS = frozenset({"readings", "inference", "status"})
_COMMAND_QUEUE_SIZE = 64


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _checkpoint() -> None:
    # Python 3.11's asyncio.wait_for (used inside aiomqtt's publish/subscribe) swallows a
    # cancellation that races with the awaited result (fixed in 3.12, gh-86296). Re-raise
    # it after each such call, or a shutdown can hang on a task that forgot it was cancelled.
    if _being_cancelled():
        raise asyncio.CancelledError


class MqttSource:
    def __init__(
        self,
        config: MqttConfig,
        site: str,
        queue: IngestQueue,
        metrics: Metrics,
        allowed_nodes: frozenset[str] = frozenset(),
        *,
        downlinks: Downlinks | None = None,
    ) -> None:
        self._config = config
        self._downlinks = downlinks
        self._reached: set[str] = set()  # nodes registered with the downlink router
        self._commands: asyncio.Queue[Command] = asyncio.Queue(_COMMAND_QUEUE_SIZE)
        self._site = site
        self._queue = queue
        self._admission = Admission(Transport.MQTT, metrics, allowed_nodes)
        self._mailbox = AckMailbox()
        url = urlsplit(config.url)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 1883
        self.ready = asyncio.Event()
        self.connections = 0

    @property
    def name(self) -> str:
        return f"source:mqtt:{self._host}:{self._port}"

    async def run(self) -> None:
        backoff = Backoff(max_s=self._config.reconnect_max_s)
        while True:
            client = aiomqtt.Client(
                self._host,
                self._port,
                identifier=self._config.client_id,
                clean_session=False,
                keepalive=self._config.keepalive_s,
                username=self._config.username,
                password=self._config.password,
            )
            paho = client._client  # see module docstring
            paho.manual_ack_set(True)
            try:
                async with client:
                    self.connections += 1
                    # Uplink kinds only: a '+' for the kind would echo our own acks back.
                    await client.subscribe([(f, 1) for f in uplink_filters(self._site)])
                    _checkpoint()
                    self.ready.set()
                    backoff.reset()
                    _LOGGER.info("mqtt: connected to %s:%d", self._host, self._port)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._send_acks(client), name=f"{self.name}:acks")
                        tg.create_task(self._send_commands(client), name=f"{self.name}:commands")
                        await self._receive(client, paho)
            except* aiomqtt.MqttError as group:
                self.ready.clear()
                self._forget_nodes()
                if _being_cancelled():
                    # aiomqtt turns a cancelled read into MqttError; shutting down wins.
                    raise asyncio.CancelledError from None
                delay = backoff.next_delay()
                _LOGGER.warning("mqtt: %s; reconnecting in %.1f s", group.exceptions[0], delay)
                await asyncio.sleep(delay)

    async def _receive(self, client: aiomqtt.Client, paho: Any) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            payload = message.payload
            mid, qos = message.mid, message.qos

            def puback(mid: int = mid, qos: int = qos) -> None:
                if qos > 0:
                    paho.ack(mid, qos)

            try:
                parts = parse_topic(topic)
                if parts.kind not in UPLINK_KINDS:
                    puback()  # our own downlink (ack/cmd) echoed by the wildcard
                    continue
                if not isinstance(payload, bytes | bytearray):
                    payload = str(payload).encode()
                msg = decode_mqtt_payload(parts.kind, bytes(payload), parts.node_id)
            except CodecError as exc:
                # Redelivery would not make it valid: acknowledge it to the broker, count it.
                self._admission.malformed(topic, exc)
                puback()
                continue
            if isinstance(msg, Ack | Command):  # decode checks type against the topic kind
                puback()
                continue
            if not self._admission.admit(msg, topic):
                puback()
                continue
            await self._queue.put(
                Envelope(msg, Transport.MQTT, now_ms(), self._mailbox, on_durable=puback)
            )

    async def _send_acks(self, client: aiomqtt.Client) -> None:
        while True:
            # Acks are cumulative: pausing between rounds lets one ack per node cover many
            # commits instead of one publish per node per commit.
            await asyncio.sleep(self._config.ack_interval_s)
            for ack in await self._mailbox.take():
                if ack.node_id not in self._reached:
                    self._reach(ack.node_id)
                # QoS 0: acks are cumulative, so a lost one is covered by the next, and
                # waiting for a PUBACK per ack would throttle ingest to the broker's RTT.
                await client.publish(
                    format_topic(self._site, ack.node_id, "ack"), encode_message(ack), qos=0
                )
                _checkpoint()

    def send_command(self, command: Command) -> bool:
        """Queue ``command`` for a QoS 1 publish to the node's cmd topic; False while the
        broker connection is down or when the command queue is full."""
        if not self.ready.is_set():
            return False
        try:
            self._commands.put_nowait(command)
        except asyncio.QueueFull:
            return False
        return True

    def _reach(self, node_id: str) -> None:
        # Registered from the ack path (once per node and connection), not per message, to
        # keep the receive path lean: a node is known to use this broker once it has
        # something durable.
        self._reached.add(node_id)
        if self._downlinks is not None:
            self._downlinks.register(node_id, self)

    def _forget_nodes(self) -> None:
        if self._downlinks is not None:
            self._downlinks.unregister_link(self)
        self._reached.clear()
        # Queued commands were refused nowhere; they are dropped with the connection (the
        # router said True, so log what is lost).
        while not self._commands.empty():
            command = self._commands.get_nowait()
            _LOGGER.warning(
                "%s: command %d lost with the broker connection", command.node_id, command.cmd_id
            )

    async def _send_commands(self, client: aiomqtt.Client) -> None:
        while True:
            command = await self._commands.get()
            # QoS 1 (unlike acks): a command is not cumulative, so the broker must take it.
            await client.publish(
                format_topic(self._site, command.node_id, "cmd"), encode_message(command), qos=1
            )
            _checkpoint()
