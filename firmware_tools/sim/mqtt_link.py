"""A node that talks MQTT: publishes to ``fieldgate/<site>/<node>/<kind>``, QoS 1.

Uplink messages go to ``readings``, ``inference`` and ``status`` as CBOR (or the
JSON form, for nodes without a CBOR library); the node subscribes to its own
``ack`` and ``cmd`` topics. A lost connection is retried with exponential
backoff and jitter; messages that were in the outbox when it dropped are lost to
the link and come back through the node's resend timer, as on a real device.

A node with model slots also subscribes to ``fieldgate/<site>/<node>/fw/down`` and
answers model-transfer requests (:mod:`gateway.protocol.xfer`) on ``.../fw/up``,
QoS 1, one request at a time in its own task.
"""

from __future__ import annotations

import asyncio
import logging

import aiomqtt

from firmware_tools.sim.links import DownlinkHandler, LinkStats, Outbox
from firmware_tools.sim.xfer_node import XferNode
from gateway.aio_compat import being_cancelled, checkpoint
from gateway.errors import CodecError
from gateway.protocol.messages import Ack, Command, UplinkMessage
from gateway.protocol.mqtt_topics import (
    decode_mqtt_payload,
    downlink_filters,
    encode_mqtt_payload,
    fw_topics,
    node_filter,
    parse_broker_url,
    parse_topic,
    topic_for,
)
from gateway.protocol.xfer import is_xfer_payload
from gateway.retry import Backoff

_LOGGER = logging.getLogger(__name__)


_XFER_QUEUE = 64


class MqttLink:
    """One node's MQTT client. ``await run(handler)`` in a task; cancel to disconnect."""

    kind = "mqtt"

    def __init__(
        self,
        node_id: str,
        *,
        broker_url: str,
        site: str,
        json: bool = False,
        queue_size: int = 256,
        keepalive_s: int = 30,
        reconnect_max_s: float = 5.0,
        publish_timeout_s: float = 10.0,
        xfer: XferNode | None = None,
    ) -> None:
        self.node_id = node_id
        self.site = site
        self.json = json
        self.host, self.port = parse_broker_url(broker_url)
        self.stats = LinkStats()
        self.ready = asyncio.Event()
        self._outbox = Outbox(self.stats, queue_size)
        self._keepalive_s = keepalive_s
        self._reconnect_max_s = reconnect_max_s
        self._publish_timeout_s = publish_timeout_s
        self.downlink_topics = downlink_filters(site, node_id)
        self.xfer = xfer
        self.fw_down, self.fw_up = fw_topics(site, node_id)
        self._xfer_in: asyncio.Queue[bytes] = asyncio.Queue(_XFER_QUEUE)
        self.xfer_dropped = 0

    @property
    def address(self) -> str:
        return node_filter(self.site, self.node_id)

    def offer(self, msg: UplinkMessage) -> None:
        self._outbox.put(msg)

    async def run(self, on_downlink: DownlinkHandler) -> None:
        backoff = Backoff(max_s=self._reconnect_max_s)
        while True:
            client = aiomqtt.Client(
                self.host,
                self.port,
                identifier=f"fieldgate-sim-{self.site}-{self.node_id}",
                keepalive=self._keepalive_s,
                timeout=self._publish_timeout_s,
            )
            try:
                async with client:
                    for topic in self.downlink_topics:
                        await client.subscribe(topic, qos=1)
                    if self.xfer is not None:
                        await client.subscribe(self.fw_down, qos=1)
                    checkpoint()
                    self.stats.connects += 1
                    self.ready.set()
                    backoff.reset()
                    _LOGGER.info(
                        "%s: connected to mqtt://%s:%d", self.node_id, self.host, self.port
                    )
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(
                            self._publish_loop(client), name=f"sim:{self.node_id}:mqtt:publish"
                        )
                        if self.xfer is not None:
                            tg.create_task(
                                self._xfer_loop(client, self.xfer),
                                name=f"sim:{self.node_id}:mqtt:xfer",
                            )
                        await self._receive_loop(client, on_downlink)
            except* aiomqtt.MqttError as group:
                self.ready.clear()
                if being_cancelled():
                    # aiomqtt turns a cancelled read into MqttError; stopping wins.
                    raise asyncio.CancelledError from None
                delay = backoff.next_delay()
                _LOGGER.info(
                    "%s: mqtt %s; reconnecting in %.2f s", self.node_id, group.exceptions[0], delay
                )
                await asyncio.sleep(delay)
            finally:
                self.ready.clear()

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while True:
            msg = await self._outbox.get()
            payload = encode_mqtt_payload(msg, json=self.json)
            try:
                await client.publish(topic_for(self.site, msg), payload, qos=1)
                checkpoint()
            except aiomqtt.MqttError:
                self.stats.dropped += 1
                raise
            self.stats.messages_out += 1
            self.stats.bytes_out += len(payload)

    async def _xfer_loop(self, client: aiomqtt.Client, xfer: XferNode) -> None:
        while True:
            payload = await self._xfer_in.get()
            for reply in await xfer.handle_async(payload):
                await client.publish(self.fw_up, reply, qos=1)
                self.stats.bytes_out += len(reply)

    async def _receive_loop(self, client: aiomqtt.Client, on_downlink: DownlinkHandler) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                self.stats.bad_in += 1
                continue
            if message.topic.value == self.fw_down:
                if self.xfer is None or not is_xfer_payload(bytes(payload)):
                    self.stats.bad_in += 1
                    continue
                try:
                    self._xfer_in.put_nowait(bytes(payload))
                except asyncio.QueueFull:
                    self.xfer_dropped += 1  # the sender times out and resends
                continue
            try:
                parts = parse_topic(str(message.topic))
                msg = decode_mqtt_payload(parts.kind, bytes(payload), parts.node_id)
            except CodecError:
                self.stats.bad_in += 1
                continue
            if not isinstance(msg, Ack | Command) or msg.node_id != self.node_id:
                self.stats.bad_in += 1
                continue
            self.stats.messages_in += 1
            on_downlink(msg)
