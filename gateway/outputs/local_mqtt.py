"""Local MQTT output: every alert event to ``<prefix>/<site>/alerts/<node_id>`` on the
site's own broker, for sirens, relays and PLCs that need no internet.

Payload: the event JSON (gateway.outputs.payload, schema ``fieldgate.alert_event/1``),
QoS 1 by default. An event leaves the buffer only after the broker acknowledged it
(PUBACK), so a broker restart loses nothing; it may deliver an event twice, which a
subscriber recognises by ``event_id``. While the broker is down events wait in a
bounded buffer; when it is full the oldest event is dropped and counted (the newest
state of an alert matters most to a relay).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiomqtt

from gateway.aio_compat import being_cancelled, checkpoint
from gateway.events import AlertEvent
from gateway.outputs.config import LocalMqttOutputConfig
from gateway.retry import Backoff

_LOGGER = logging.getLogger(__name__)


def alert_topic(prefix: str, site: str, node_id: str) -> str:
    return f"{prefix}/{site}/alerts/{node_id}"


@dataclass(frozen=True, slots=True)
class _Outgoing:
    event_id: str
    topic: str
    payload: bytes


class LocalMqttOutput:
    def __init__(self, config: LocalMqttOutputConfig, site: str) -> None:
        self._config = config
        self._site = site
        url = urlsplit(config.url)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 1883
        self._buffer: deque[_Outgoing] = deque(maxlen=config.buffer_max_events)
        self._wakeup = asyncio.Event()
        self.connected = asyncio.Event()
        self.published = 0
        self.dropped = 0
        self.connections = 0

    @property
    def name(self) -> str:
        return f"output:mqtt:{self._host}:{self._port}"

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def offer(self, event: AlertEvent, body: bytes) -> None:
        """Queue ``event`` for publishing (never blocks)."""
        if not self._config.wants(event):
            return
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
            _LOGGER.warning(
                "%s: buffer full (%d events; broker down?); dropped the oldest (%d so far)",
                event.alert.node_id,
                len(self._buffer),
                self.dropped,
            )
        topic = alert_topic(self._config.topic_prefix, self._site, event.alert.node_id)
        self._buffer.append(_Outgoing(event.event_id, topic, body))
        self._wakeup.set()

    async def run(self) -> None:
        backoff = Backoff(max_s=self._config.reconnect_max_s)
        password = self._config.password
        while True:
            client = aiomqtt.Client(
                self._host,
                self._port,
                identifier=self._config.client_id,
                username=self._config.username,
                password=password.get_secret_value() if password else None,
            )
            try:
                async with client:
                    checkpoint()
                    self.connections += 1
                    self.connected.set()
                    backoff.reset()
                    _LOGGER.info("local mqtt: connected to %s:%d", self._host, self._port)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._watch(client), name=f"{self.name}:watch")
                        await self._publish_forever(client)
            except* aiomqtt.MqttError as group:
                self.connected.clear()
                if being_cancelled():
                    raise asyncio.CancelledError from None
                delay = backoff.next_delay()
                _LOGGER.warning(
                    "local mqtt: %s; %d events buffered; reconnecting in %.1f s",
                    group.exceptions[0],
                    len(self._buffer),
                    delay,
                )
                await asyncio.sleep(delay)
            finally:
                self.connected.clear()

    async def _watch(self, client: aiomqtt.Client) -> None:
        # We subscribe to nothing; the message iterator is aiomqtt's public way to learn
        # that the connection dropped while we sit idle between alerts.
        async for _ in client.messages:
            pass

    async def _publish_forever(self, client: aiomqtt.Client) -> None:
        while True:
            if not self._buffer:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            item = self._buffer[0]
            await client.publish(
                item.topic,
                item.payload,
                qos=self._config.qos,
                retain=self._config.retain,
                timeout=10,
            )
            checkpoint()
            # offer() may have dropped the head while we awaited; pop only our own item.
            if self._buffer and self._buffer[0] is item:
                self._buffer.popleft()
            self.published += 1
