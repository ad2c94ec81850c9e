"""The gateway's broker connection: MQTT 3.1.1 over an asyncio transport.

The packets are gateway.protocol.mqtt_wire's (sans-IO); this module is the I/O around
them: an :class:`asyncio.Protocol` on a TCP or TLS transport, plus what the gateway's
ingest rate and durability depend on:

- **Batched reads.** Each ``data_received`` parses every whole packet of the read and
  hands each PUBLISH to ``on_message``, in order, straight from the event loop.
- **Corked writes.** Packets are queued and one callback per loop iteration writes them
  all at once, so every PUBACK released by one journal commit and every ack of one round
  leave in one ``send``.
- **PUBACK after commit.** A QoS 1 message is PUBACKed only when :meth:`MqttConnection.ack`
  is called; the session is persistent (``clean_session=False``, fixed client id), so
  what was not acknowledged is redelivered after a reconnect.
- **Backpressure.** :meth:`MqttConnection.pause_reading` stops between two packets (the
  rest of the read waits here) and pauses the transport; TCP flow control then keeps the
  broker's backlog at the broker.
- **Keepalive.** :meth:`MqttConnection.serve` sends PINGREQ when nothing was sent for
  ``keepalive_s`` and ends the connection when the broker has sent nothing (no PINGRESP)
  for ``keepalive_s`` after that.

Every error of the connection surfaces as :class:`~gateway.errors.TransportError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

from gateway.errors import CodecError, TransportError
from gateway.protocol import mqtt_wire as wire
from gateway.protocol.mqtt_wire import Publish

_LOGGER = logging.getLogger(__name__)

MessageHandler = Callable[[Publish], None]

# Largest packet taken from the broker: far above any node message (docs/protocol.md).
MAX_PACKET = 1 << 20
# Acks go to a few thousand node topics at most; their encoded names are kept.
_TOPIC_CACHE_MAX = 4096


class MqttConnection(asyncio.Protocol):
    """An MQTT 3.1.1 connection with a persistent session and manual PUBACKs.

    ``on_message`` runs inside the read callback for every PUBLISH, in order; a QoS 1
    message is PUBACKed only when the caller says so with :meth:`ack`. Use as an async
    context manager: entering connects (CONNACK received), leaving disconnects.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        keepalive_s: int,
        on_message: MessageHandler,
        username: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._client_id = client_id
        self._keepalive_s = keepalive_s
        self._username, self._password = username, password
        self._connect_timeout_s = connect_timeout_s
        self._tls = tls
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        self._reader = wire.PacketReader(MAX_PACKET)
        self._transport: asyncio.Transport | None = None
        self._connack: asyncio.Future[wire.Connack] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._subacks: dict[int, asyncio.Future[tuple[int, ...]]] = {}
        self._pubacks: dict[int, asyncio.Future[None]] = {}
        self._next_mid = 0
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._topics: dict[str, bytes] = {}
        self._last_out = self._last_in = self._loop.time()
        self._ping_at: float | None = None  # when an unanswered PINGREQ was sent
        self.paused = False

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> MqttConnection:
        await self._connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def _connect(self) -> None:
        where = f"{self._host}:{self._port}"
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await self._loop.create_connection(
                    lambda: self,
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls is not None else None,
                    ssl_handshake_timeout=self._connect_timeout_s if self._tls else None,
                )
        except TimeoutError:
            self.close()
            raise TransportError(f"cannot connect to {where}: timed out") from None
        except OSError as exc:  # refused, unreachable, name lookup, TLS (ssl.SSLError)
            self.close()
            raise TransportError(f"cannot connect to {where}: {exc}") from exc
        self._send(
            wire.encode_connect(
                self._client_id,
                keepalive_s=self._keepalive_s,
                clean_session=False,
                username=self._username,
                password=self._password,
            )
        )
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                waiting: list[asyncio.Future[Any]] = [self._connack, self._closed]
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not self._connack.done():
                self._closed.result()  # raises why the connection ended
            refusal = self._connack.result().refusal
            if refusal is not None:
                raise TransportError(f"the broker at {where} refused us: {refusal}")
        except TimeoutError:
            self.close()
            raise TransportError(f"no CONNACK from {where}") from None
        except BaseException:
            self.close()
            raise

    async def serve(self) -> None:
        """Keep the connection alive until it ends, then raise :class:`TransportError` saying
        why. As paho does: a PINGREQ once nothing went out or came in for ``keepalive_s``,
        and the end when nothing at all came back for ``keepalive_s`` after it."""
        keepalive = self._keepalive_s
        tick = min(1.0, keepalive / 4) if keepalive else None
        while not self._closed.done():
            await asyncio.wait([self._closed], timeout=tick)
            if not keepalive or self._closed.done():
                continue
            now = self._loop.time()
            if self._ping_at is not None:
                if now - self._ping_at >= keepalive:
                    self._fail(TransportError(f"no PINGRESP from the broker within {keepalive} s"))
            elif now - self._last_out >= keepalive or now - self._last_in >= keepalive:
                self._ping_at = now
                self._send(wire.PINGREQ)
        self._closed.result()

    def close(self) -> None:
        """Send DISCONNECT (best effort) and close the transport. Safe to call twice."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._out.append(wire.DISCONNECT)
            self._flush()
            transport.close()  # writes what is buffered, then closes
        if not self._closed.done():
            self._closed.set_exception(TransportError("disconnected"))
        # Nobody may wait for it any more: retrieve it so asyncio does not log it.
        with contextlib.suppress(TransportError):
            self._closed.result()

    # -- requests ------------------------------------------------------------------------

    async def subscribe(self, filters: list[tuple[str, int]]) -> None:
        """Subscribe and wait for the SUBACK; TransportError when the broker refuses one."""
        mid = self._new_mid()
        done = self._subacks[mid] = self._loop.create_future()
        self._send(wire.encode_subscribe(mid, filters))
        codes = await self._until(done, "SUBACK")
        refused = [
            f for (f, _q), code in zip(filters, codes, strict=False) if code == wire.SUBACK_FAILURE
        ]
        if refused or len(codes) != len(filters):
            raise TransportError(f"the broker refused the subscription to {refused or filters}")

    def publish(self, topic: str, payload: bytes, qos: int) -> int:
        """Queue a publish for the next write round; its packet id (0 at QoS 0)."""
        name = self._topics.get(topic)
        if name is None:
            if len(self._topics) >= _TOPIC_CACHE_MAX:
                self._topics.clear()
            name = self._topics[topic] = wire.encode_string(topic)
        mid = self._new_mid() if qos else 0
        self._send(wire.encode_publish(name, payload, qos, mid))
        return mid

    async def publish_confirmed(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK."""
        mid = self.publish(topic, payload, qos=1)
        done = self._pubacks[mid] = self._loop.create_future()
        await self._until(done, "PUBACK")

    def ack(self, mid: int, qos: int) -> None:
        """PUBACK a received message (queued for the next write round)."""
        if qos and self._transport is not None:
            self._send(wire.encode_puback(mid))

    def pause_reading(self) -> None:
        """Stop taking packets from the broker until :meth:`resume_reading`."""
        if self.paused:
            return
        self.paused = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.paused:
            return
        self.paused = False
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.resume_reading()
        if self._reader.buffered:
            self._loop.call_soon(self._drain)  # packets left in the last read

    def _new_mid(self) -> int:
        for _ in range(0xFFFF):
            self._next_mid = self._next_mid % 0xFFFF + 1
            if self._next_mid not in self._pubacks and self._next_mid not in self._subacks:
                return self._next_mid
        raise TransportError("all 65535 MQTT packet ids are waiting for an answer")

    async def _until(self, done: asyncio.Future[Any], what: str) -> Any:
        await asyncio.wait([done, self._closed], return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            done.cancel()
            self._closed.result()  # raises why the connection ended
        return done.result()

    # -- writes --------------------------------------------------------------------------

    def _send(self, packet: bytes) -> None:
        self._out.append(packet)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """One corked write: everything queued in this loop iteration leaves in one send."""
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        self._last_out = self._loop.time()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a stream transport
        self._last_in = self._last_out = self._loop.time()

    def data_received(self, data: bytes) -> None:
        self._last_in = self._loop.time()
        self._ping_at = None  # the broker is alive, whatever it sent
        self._reader.feed(data)
        self._drain()

    def _drain(self) -> None:
        reader, on_message = self._reader, self._on_message
        try:
            while not self.paused:
                packet = reader.next()
                if packet is None:
                    return
                if type(packet) is Publish:
                    on_message(packet)
                else:
                    self._control(packet)
        except CodecError as exc:
            self._fail(TransportError(f"malformed packet from the broker: {exc}"), exc)
        except Exception as exc:  # a callback's bug: end the connection, re-raise in serve
            _LOGGER.exception("mqtt: reading from the broker failed; dropping the connection")
            self._fail(TransportError(f"mqtt connection failed: {exc}"), exc)

    def _control(self, packet: wire.Packet) -> None:
        if isinstance(packet, wire.Puback):
            done = self._pubacks.pop(packet.mid, None)
            if done is not None and not done.done():
                done.set_result(None)
        elif isinstance(packet, wire.Suback):
            sub = self._subacks.pop(packet.mid, None)
            if sub is not None and not sub.done():
                sub.set_result(packet.codes)
        elif isinstance(packet, wire.Connack):
            if self._connack.done():
                raise TransportError("a second CONNACK from the broker")
            self._connack.set_result(packet)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost says why

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        reason = f"broker connection lost: {exc}" if exc else "the broker closed the connection"
        if not self._closed.done():
            error = TransportError(reason)
            error.__cause__ = exc
            self._closed.set_exception(error)

    def _fail(self, error: TransportError, cause: BaseException | None = None) -> None:
        if cause is not None:
            error.__cause__ = cause
        if not self._closed.done():
            self._closed.set_exception(error)
        if self._transport is not None:
            self._transport.abort()
