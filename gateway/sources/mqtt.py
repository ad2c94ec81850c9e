"""MQTT source: subscribe to ``fieldgate/<site>/+/+`` and acknowledge after commit.

Durability across the broker: the session is persistent (``clean_session=False``
with a fixed client id) and PUBACKs are sent only when asked for, so a
QoS 1 message is PUBACKed to the broker only once the journal has committed it.
If the gateway dies before that, the broker redelivers it on reconnect and the
journal drops the copy it may already hold.

The broker connection is our own (gateway.sources.mqtt_connection, on the sans-IO
codec gateway.protocol.mqtt_wire): every packet of a read parsed in one callback, every
packet queued in one loop iteration written in one send.

Acks and commands go back in the form (CBOR or JSON) of the node's latest uplink
(docs/protocol.md, "Payloads: CBOR or JSON"), so a node without a CBOR library can
read what the gateway tells it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from gateway.config import MqttConfig
from gateway.downlink import Downlinks, LinkReach
from gateway.errors import CodecError, TopicError, TransportError
from gateway.identity.config import MQTT_CHANNEL
from gateway.identity.gate import NodeGate
from gateway.ingest import Envelope, IngestQueue
from gateway.metrics import Metrics
from gateway.protocol.json_payload import encode_json_message, is_json_payload
from gateway.protocol.messages import Ack, Command, Transport
from gateway.protocol.mqtt_topics import (
    decode_mqtt_payload,
    format_topic,
    parse_topic,
    uplink_filters,
)
from gateway.protocol.mqtt_wire import Publish
from gateway.protocol.payload import encode_message
from gateway.protocol.payload.encode import ack_head, encode_ack
from gateway.retry import Backoff
from gateway.sources.common import AckMailbox, Admission, CommandOutbox, now_ms
from gateway.sources.mqtt_connection import MqttConnection
from gateway.sources.mqtt_tls import client_context

_LOGGER = logging.getLogger(__name__)
UPLINK_KINDS = frozenset({"readings", "inference", "status"})
_COMMAND_QUEUE_SIZE = 64
_ACK_HEADS_MAX = 4096


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
        gate: NodeGate | None = None,
    ) -> None:
        self._config = config
        self._reach = LinkReach(downlinks, self)
        self._commands = CommandOutbox("broker", _COMMAND_QUEUE_SIZE)
        self._site = site
        self._queue = queue
        self._admission = Admission(Transport.MQTT, metrics, allowed_nodes, gate)
        self._mailbox = AckMailbox()
        self._json_nodes: set[str] = set()  # nodes whose latest uplink was JSON
        # (node, boot) -> ack topic and the CBOR of its acks up to the seq.
        self._ack_heads: dict[tuple[str, int], tuple[str, bytes]] = {}
        self._host, self._port = config.broker
        self._tls = client_context(config)
        self.ready = asyncio.Event()
        self.connections = 0
        # QoS 1 messages taken from the broker and those PUBACKed (committed or refused):
        # the difference is what the gateway holds unacknowledged.
        self.received = 0
        self.pubacked = 0
        self.read_pauses = 0  # times a full ingest queue pushed back on the broker

    @property
    def name(self) -> str:
        return f"source:mqtt:{self._host}:{self._port}"

    async def run(self) -> None:
        backoff = Backoff(max_s=self._config.reconnect_max_s)
        while True:
            backlog: deque[Envelope] = deque()
            has_backlog = asyncio.Event()
            conn = self._connection(backlog, has_backlog)
            try:
                async with conn, asyncio.TaskGroup() as tg:
                    self.connections += 1
                    tg.create_task(conn.serve(), name=f"{self.name}:link")
                    # Before subscribing: a session's backlog may fill the queue and pause
                    # reading before SUBACK is read, and only the pump resumes it.
                    tg.create_task(self._pump(backlog, has_backlog, conn), name=f"{self.name}:pump")
                    # Uplink kinds only: a '+' for the kind would echo our own acks back.
                    await conn.subscribe([(f, 1) for f in uplink_filters(self._site)])
                    self.ready.set()
                    backoff.reset()
                    _LOGGER.info("mqtt: connected to %s:%d", self._host, self._port)
                    tg.create_task(self._send_acks(conn), name=f"{self.name}:acks")
                    tg.create_task(self._send_commands(conn), name=f"{self.name}:commands")
            except* TransportError as group:
                self.ready.clear()
                self._forget_nodes()
                delay = backoff.next_delay()
                _LOGGER.warning("mqtt: %s; reconnecting in %.1f s", group.exceptions[0], delay)
                await asyncio.sleep(delay)

    def _connection(self, backlog: deque[Envelope], has_backlog: asyncio.Event) -> MqttConnection:
        def on_message(message: Publish) -> None:
            self._on_message(message, conn, backlog, has_backlog)

        # The message handler is in place before CONNECT: a persistent session's backlog
        # arrives right after CONNACK, before SUBACK.
        conn = MqttConnection(
            self._host,
            self._port,
            client_id=self._config.client_id,
            keepalive_s=self._config.keepalive_s,
            username=self._config.username,
            password=self._config.password_value(),
            on_message=on_message,
            tls=self._tls,
        )
        return conn

    def _on_message(
        self,
        message: Publish,
        conn: MqttConnection,
        backlog: deque[Envelope],
        has_backlog: asyncio.Event,
    ) -> None:
        """Decode and queue one message, straight from the connection's read callback.

        Envelopes the bounded ingest queue cannot take at once wait in ``backlog``, in
        order, and the pump feeds them with the queue's own policy. The first one that
        waits pauses reading from the broker until the pump has handed the backlog over:
        TCP flow control then keeps the rest at the broker, so a long backlog after an
        outage never piles up in gateway memory, whatever in-flight window the broker allows.
        """
        self.received += 1
        env = self._envelope(message, conn)
        if env is None:
            return
        if not backlog and self._queue.try_put(env):
            return
        backlog.append(env)
        has_backlog.set()
        if not conn.paused:
            self.read_pauses += 1
            conn.pause_reading()

    async def _pump(
        self, backlog: deque[Envelope], has_backlog: asyncio.Event, conn: MqttConnection
    ) -> None:
        while True:
            await has_backlog.wait()
            while backlog:
                await self._queue.put(backlog[0])
                backlog.popleft()
            has_backlog.clear()
            conn.resume_reading()

    def _envelope(self, message: Publish, conn: MqttConnection) -> Envelope | None:
        """Decode and admit one PUBLISH; None (and PUBACKed) when it will not enter."""
        mid, qos = message.mid, message.qos

        def puback() -> None:
            if qos > 0:
                conn.ack(mid, qos)
                self.pubacked += 1

        try:
            topic: str = message.topic  # decoded here, once; raises on invalid UTF-8
        except UnicodeDecodeError as exc:
            raw_topic = bytes(exc.object)
            self._admission.malformed(
                repr(raw_topic[:80]), TopicError(f"topic is not valid UTF-8: {exc}", raw_topic, 0)
            )
            puback()
            return None
        try:
            parts = parse_topic(topic)
            if parts.kind not in UPLINK_KINDS:
                puback()  # our own downlink (ack/cmd) echoed by the wildcard
                return None
            msg = decode_mqtt_payload(parts.kind, message.payload, parts.node_id)
        except CodecError as exc:
            # Redelivery would not make it valid: acknowledge it to the broker, count it.
            self._admission.malformed(topic, exc)
            puback()
            return None
        if isinstance(msg, Ack | Command):  # decode checks type against the topic kind
            puback()
            return None
        if not self._admission.admit(msg, topic, MQTT_CHANNEL):
            puback()
            return None
        # Answer in the form of the node's latest uplink. Bounded like LinkReach: by the
        # nodes admitted on this link.
        if is_json_payload(message.payload):
            self._json_nodes.add(msg.node_id)
        else:
            self._json_nodes.discard(msg.node_id)
        return Envelope(msg, Transport.MQTT, now_ms(), self._mailbox, on_durable=puback)

    def _payload_for(self, msg: Ack | Command) -> bytes:
        """``msg`` encoded in the form of its node's latest uplink (CBOR or JSON)."""
        if msg.node_id in self._json_nodes:
            return encode_json_message(msg)
        return encode_message(msg)

    async def _send_acks(self, conn: MqttConnection) -> None:
        while True:
            # Acks are cumulative: pausing between rounds lets one ack per node cover many
            # commits instead of one publish per node per commit.
            await asyncio.sleep(self._config.ack_interval_s)
            for ack in await self._mailbox.take():
                self._reach.note(ack.node_id)
                # QoS 0: acks are cumulative, so a lost one is covered by the next, and
                # waiting for a PUBACK per ack would throttle ingest to the broker's RTT.
                # All acks of a round leave in one corked write.
                conn.publish(*self._ack_publish(ack), qos=0)

    def _ack_publish(self, ack: Ack) -> tuple[str, bytes]:
        """Topic and payload of ``ack``; for a CBOR node both built once per node and boot
        (every node gets an ack after nearly every commit), only the seq encoded each time."""
        if ack.node_id in self._json_nodes:
            return format_topic(self._site, ack.node_id, "ack"), encode_json_message(ack)
        key = (ack.node_id, ack.boot_id)
        cached = self._ack_heads.get(key)
        if cached is None:
            if len(self._ack_heads) >= _ACK_HEADS_MAX:  # bounded: old boots go too
                self._ack_heads.clear()
            cached = format_topic(self._site, ack.node_id, "ack"), ack_head(*key)
            self._ack_heads[key] = cached
        topic, head = cached
        return topic, encode_ack(head, ack.up_to_seq)

    def send_command(self, command: Command) -> bool:
        """Queue ``command`` for a QoS 1 publish to the node's cmd topic; False while the
        broker connection is down or when the command queue is full."""
        return self.ready.is_set() and self._commands.offer(command)

    def _forget_nodes(self) -> None:
        self._reach.forget_all()
        self._commands.drop_all()

    async def _send_commands(self, conn: MqttConnection) -> None:
        while True:
            command = await self._commands.get()
            # QoS 1 (unlike acks): a command is not cumulative, so the broker must take it.
            await conn.publish_confirmed(
                format_topic(self._site, command.node_id, "cmd"), self._payload_for(command)
            )
