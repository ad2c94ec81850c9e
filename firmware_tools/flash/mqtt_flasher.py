"""Flash a networked node through the site broker with our binary transfer.

Requests and chunks are published on ``fieldgate/<site>/<node>/fw/down``, the node answers on
``.../fw/up``; both QoS 1 (docs/protocol.md §10). The broker connection is opened on first use
with a clean session: a reply published before we subscribed is of no use to a new attempt,
which asks again anyway.
"""

from __future__ import annotations

import asyncio
import logging
import os

import aiomqtt

from firmware_tools.flash.api import NodeUnreachable
from firmware_tools.flash.xfer_session import XferFlasher, XferSession
from gateway.protocol import xfer
from gateway.protocol.mqtt_topics import fw_topics, parse_broker_url

_LOGGER = logging.getLogger(__name__)

MQTT_CHUNK_BYTES = 2048  # a broker message per chunk: larger chunks, fewer round trips


class MqttFlasher(XferFlasher):
    """:class:`~firmware_tools.flash.api.NodeFlasher` through an MQTT broker."""

    transport = "mqtt"

    def __init__(
        self,
        node_id: str,
        broker_url: str,
        *,
        site: str,
        timeout_s: float = 5.0,
        chunk_bytes: int = MQTT_CHUNK_BYTES,
        window: int = xfer.DEFAULT_WINDOW,
    ) -> None:
        self._node_id = node_id
        self.broker_url = broker_url
        self.host, self.port = parse_broker_url(broker_url)
        self.site = site
        self.topic_down, self.topic_up = fw_topics(site, node_id)
        self._timeout_s = timeout_s
        self._client: aiomqtt.Client | None = None
        self._messages: asyncio.Queue[bytes] | None = None
        self.session = XferSession(
            node_id,
            self._send,
            self._recv,
            timeout_s=timeout_s,
            chunk_bytes=chunk_bytes,
            window=window,
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except aiomqtt.MqttError as exc:
                _LOGGER.debug("%s: disconnect: %s", self._node_id, exc)

    # -- wire ----------------------------------------------------------------------------------

    async def _connect(self) -> aiomqtt.Client:
        if self._client is not None:
            return self._client
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=f"flash-model-{self._node_id}-{os.getpid()}",
            timeout=self._timeout_s,
            clean_session=True,
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise NodeUnreachable(
                self._node_id, f"cannot reach broker {self.broker_url}: {exc}"
            ) from exc
        try:
            await client.subscribe(self.topic_up, qos=1)
        except aiomqtt.MqttError as exc:
            await client.__aexit__(None, None, None)
            raise NodeUnreachable(self._node_id, f"subscribe {self.topic_up}: {exc}") from exc
        self._client = client
        return client

    async def _send(self, payload: bytes) -> None:
        client = await self._connect()
        try:
            await client.publish(self.topic_down, payload, qos=1)
        except aiomqtt.MqttError as exc:
            await self.aclose()
            raise NodeUnreachable(self._node_id, f"publish to {self.broker_url}: {exc}") from exc

    async def _recv(self) -> bytes:
        client = await self._connect()
        try:
            message = await anext(aiter(client.messages))
        except aiomqtt.MqttError as exc:
            await self.aclose()
            raise NodeUnreachable(self._node_id, f"broker connection lost: {exc}") from exc
        payload = message.payload
        return bytes(payload) if isinstance(payload, bytes | bytearray) else b""
