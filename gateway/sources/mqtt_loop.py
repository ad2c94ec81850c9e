"""One paho client connection, driven by the running asyncio loop.

paho-mqtt 2.x documents an "external event loop" API (paho's ``examples/loop_asyncio.py``):
the application watches ``socket()`` itself and calls ``loop_read()`` when it is readable,
``loop_write()`` when paho has asked for writing through ``on_socket_register_write``, and
``loop_misc()`` about once a second for keepalive. :class:`PahoConnection` does exactly
that with ``loop.add_reader`` / ``loop.add_writer``, and adds three things the gateway's
ingest rate depends on (bench.ingest):

- **Batched reads.** The socket is a :class:`~gateway.sources.mqtt_socket.BufferedSocket`;
  one readable callback calls ``loop_read`` until nothing is buffered.
- **Corked writes.** paho's write request schedules one write round on the loop instead of
  writing at once, so every packet queued in one loop iteration (all the PUBACKs released
  by one journal commit, the acks of one round) leaves in one ``send``. Only when the
  kernel will not take everything does the socket get a writer callback.
- **Backpressure.** :meth:`PahoConnection.pause_reading` stops reading between two
  packets; TCP flow control then keeps the broker's backlog at the broker.

Every error of the connection surfaces as :class:`~gateway.errors.TransportError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import TransportError
from gateway.sources.mqtt_socket import BufferedSocket, buffer_sockets

_LOGGER = logging.getLogger(__name__)

MessageHandler = Callable[[paho.MQTTMessage], None]

# paho's loop_misc checks keepalive in whole seconds; calling it more often buys nothing.
_MISC_INTERVAL_S = 1.0


class PahoConnection:
    """An MQTT 3.1.1 connection with a persistent session and manual PUBACKs.

    ``on_message`` runs inside the readable callback for every PUBLISH, in order; a QoS 1
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
    ) -> None:
        self._host, self._port = host, port
        self._keepalive_s = keepalive_s
        self._connect_timeout_s = connect_timeout_s
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=paho.MQTTv311,
        )
        client.manual_ack_set(True)
        if username is not None:
            client.username_pw_set(username, password)
        client.connect_timeout = connect_timeout_s
        client.on_message = lambda _client, _userdata, message: on_message(message)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        buffer_sockets(client)
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._sock: BufferedSocket | None = None
        self._fd = -1
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._subacks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._pubacks: dict[int, asyncio.Future[None]] = {}
        self._write_scheduled = False
        self._writing = False
        self._writer_registered = False
        self.paused = False

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> PahoConnection:
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
        client = self._client
        # paho's connect resolves the name and connects with blocking calls, so it runs in
        # a worker thread (as aiomqtt does it). The socket callbacks are installed only
        # once it is back: until then paho writes CONNECT itself, on that thread.
        connecting = self._loop.run_in_executor(
            None, client.connect, self._host, self._port, self._keepalive_s
        )
        try:
            # Shielded: cancelling cannot stop the thread, so wait for it and close what it
            # opened (bounded by paho's connect timeout).
            await asyncio.shield(connecting)
        except OSError as exc:
            raise TransportError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        except asyncio.CancelledError:
            await asyncio.wait([connecting])
            if not connecting.cancelled():
                connecting.exception()  # retrieved: a failed connect needs no cleanup
            self.close()
            raise
        try:
            await self._wait_for_connack(client)
        except BaseException:
            self.close()
            raise

    async def _wait_for_connack(self, client: paho.Client) -> None:
        sock = client.socket()
        if not isinstance(sock, BufferedSocket):
            raise TypeError(f"paho did not open its socket through the wrapper: {sock!r}")
        self._sock, self._fd = sock, sock.fileno()
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        self._loop.add_reader(self._fd, self._read)
        if client.want_write():
            self._schedule_write()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await asyncio.wait(
                    [self._connack, self._closed], return_when=asyncio.FIRST_COMPLETED
                )
        except TimeoutError:
            raise TransportError(f"no CONNACK from {self._host}:{self._port}") from None
        if self._connack.done():
            self._connack.result()  # raises the broker's refusal
        else:
            self._closed.result()

    async def serve(self) -> None:
        """Keep the connection alive (paho's keepalive) until it ends, then raise
        :class:`TransportError` saying why."""
        while not self._closed.done():
            self._client.loop_misc()
            if self._client.socket() is None and not self._closed.done():
                self._closed.set_exception(TransportError("the broker connection was closed"))
            await asyncio.wait([self._closed], timeout=_MISC_INTERVAL_S)
        self._closed.result()

    def close(self) -> None:
        """Send DISCONNECT (best effort) and close the socket. Safe to call twice."""
        if self._client.socket() is not None:
            self._client.disconnect()
            self._write_round()  # paho closes the socket once DISCONNECT is written
            leftover = self._client.socket()
            if leftover is not None:  # DISCONNECT could not even be queued: just close
                self._on_socket_close(self._client, None, leftover)
                leftover.close()
        if not self._closed.done():
            self._closed.set_exception(TransportError("disconnected"))
        # Nobody may wait for it any more: retrieve it so asyncio does not log it.
        with contextlib.suppress(TransportError):
            self._closed.result()

    # -- requests ------------------------------------------------------------------------

    async def subscribe(self, filters: list[tuple[str, int]]) -> None:
        """Subscribe and wait for the SUBACK; TransportError when the broker refuses one."""
        rc, mid = self._client.subscribe(filters)
        self._check(rc, "subscribe")
        if mid is None:
            raise TransportError("mqtt subscribe failed: no message id")
        done = self._subacks[mid] = self._loop.create_future()
        codes = await self._until(done, "SUBACK")
        refused = [f for (f, _q), code in zip(filters, codes, strict=False) if code.is_failure]
        if refused:
            raise TransportError(f"the broker refused the subscription to {refused}")

    def publish(self, topic: str, payload: bytes, qos: int) -> int:
        """Queue a publish for the next write round; its message id."""
        info = self._client.publish(topic, payload, qos=qos)
        self._check(info.rc, "publish")
        return info.mid

    async def publish_confirmed(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK."""
        mid = self.publish(topic, payload, qos=1)
        done = self._pubacks[mid] = self._loop.create_future()
        await self._until(done, "PUBACK")

    def ack(self, mid: int, qos: int) -> None:
        """PUBACK a received message (queued for the next write round)."""
        if self._client.socket() is not None:
            self._client.ack(mid, qos)

    def pause_reading(self) -> None:
        """Stop taking packets from the broker until :meth:`resume_reading`."""
        if self.paused:
            return
        self.paused = True
        if self._sock is not None and not self._sock.closed:
            self._sock.reading_paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self.paused:
            return
        self.paused = False
        sock = self._sock
        if sock is None or sock.closed:
            return
        sock.reading_paused = False
        self._loop.add_reader(self._fd, self._read)
        if sock.pending():
            self._loop.call_soon(self._read)  # buffered bytes will not wake the selector

    def _check(self, rc: int, what: str) -> None:
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransportError(f"mqtt {what} failed: {paho.error_string(rc)}")

    async def _until(self, done: asyncio.Future[Any], what: str) -> Any:
        await asyncio.wait([done, self._closed], return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            done.cancel()
            self._closed.result()  # raises why the connection ended
        return done.result()

    # -- the event loop's side -----------------------------------------------------------

    def _read(self) -> None:
        client = self._client
        try:
            while not self.paused:
                rc = client.loop_read()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is None:
                    break
                if self._sock is None or not self._sock.pending():
                    break
        except Exception as exc:  # a callback's bug: end the connection and re-raise in serve
            _LOGGER.exception("mqtt: reading from the broker failed; dropping the connection")
            self._fail(exc)

    def _on_register_write(self, _client: Any, _userdata: Any, _sock: Any) -> None:
        if not self._writing and not self._writer_registered:
            self._schedule_write()

    def _schedule_write(self) -> None:
        if not self._write_scheduled:
            self._write_scheduled = True
            self._loop.call_soon(self._write_round)

    def _write_round(self) -> None:
        """One corked ``loop_write``: everything paho has queued leaves in one send."""
        self._write_scheduled = False
        sock = self._sock
        if sock is None or sock.closed:
            return
        self._writing = True
        sock.cork()
        try:
            self._client.loop_write()
        finally:
            self._writing = False
            try:
                all_sent = sock.uncork()
            except OSError as exc:
                self._fail(exc)
                return
        if sock.closed:
            return
        more = not all_sent or self._client.want_write()
        if more and not self._writer_registered:
            self._loop.add_writer(self._fd, self._write_round)
            self._writer_registered = True
        elif not more and self._writer_registered:
            self._loop.remove_writer(self._fd)
            self._writer_registered = False

    def _fail(self, exc: BaseException) -> None:
        if not self._closed.done():
            error = TransportError(f"mqtt connection failed: {exc}")
            error.__cause__ = exc
            self._closed.set_exception(error)
        if self._sock is not None and not self._sock.closed:
            # paho sees the end of the stream on its next read and closes the connection.
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    # -- paho callbacks --------------------------------------------------------------------

    def _on_socket_close(self, _client: Any, _userdata: Any, _sock: Any) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._writer_registered = False
            self._fd = -1

    def _on_connect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_exception(
                TransportError(f"the broker at {self._host}:{self._port} refused us: {reason}")
            )
        else:
            self._connack.set_result(None)

    def _on_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if not self._closed.done():
            self._closed.set_exception(TransportError(f"broker connection lost: {reason}"))

    def _on_subscribe(
        self, _client: Any, _userdata: Any, mid: int, codes: list[ReasonCode], _props: Any
    ) -> None:
        done = self._subacks.pop(mid, None)
        if done is not None and not done.done():
            done.set_result(codes)

    def _on_publish(
        self, _client: Any, _userdata: Any, mid: int, _reason: ReasonCode, _props: Any
    ) -> None:
        done = self._pubacks.pop(mid, None)
        if done is not None and not done.done():
            done.set_result(None)
