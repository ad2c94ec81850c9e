"""Virtual BLE radios: Bumble controllers sharing one simulated "air".

A :class:`LocalRadio` puts N virtual controllers on one ``LocalLink``. In one process,
hosts attach with the ``local:`` specs in ``radio.specs``. To keep the gateway and
node simulators in separate processes (``kill -9`` tests), run::

    python -m gateway.ble.radio --controllers N --base-port P

Every controller is then served over its own TCP port (H4 framing), and each process
attaches to its controller with ``tcp-client:127.0.0.1:<port>``; the radio prints
``radio ready: <spec> <spec> ...`` once all ports listen.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import signal
import sys
from types import TracebackType

from bumble import core
from bumble.link import LocalLink
from bumble.transport.common import PacketParser

from gateway.ble.transport import (
    LOCAL_SCHEME,
    VirtualController,
    register_local_controller,
    unregister_local_controller,
)

_LOGGER = logging.getLogger(__name__)

_radio_ids = itertools.count(1)


class _HciServerProtocol(asyncio.Protocol):
    """H4 over one TCP connection, between a remote host and one controller."""

    def __init__(self, server: HciTcpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._parser = PacketParser(server.controller)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self._server.attached is not None or self._server.controller.host is not None:
            _LOGGER.warning("%s: refusing a second host", self._server.controller.name)
            transport.close()
            return
        self._transport = transport
        self._server.attached = self
        self._server.controller.host = self

    def on_packet(self, packet: bytes) -> None:
        # Packets queued by the controller may land after the host has gone.
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(packet)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except core.InvalidPacketError:
            _LOGGER.warning("%s: garbage from host, dropping it", self._server.controller.name)
            assert self._transport is not None
            self._transport.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._server.attached is self:
            self._server.attached = None
            self._server.controller.detach_host()
        self._transport = None


class HciTcpServer:
    """Serves one virtual controller to one host at a time over TCP (H4 framing).

    Unlike Bumble's ``tcp-server`` transport, a host that disconnects (or is killed)
    unplugs cleanly: its links drop and the next host starts from a clean parser.
    """

    def __init__(self, controller: VirtualController) -> None:
        self.controller = controller
        self.attached: _HciServerProtocol | None = None
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 picks a free port) and return the bound port."""
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _HciServerProtocol(self), host, port
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            if self.attached is not None:
                self.attached.close()
            await self._server.wait_closed()
            self._server = None


class LocalRadio:
    """N virtual controllers sharing one ``LocalLink``, created in this process.

    Use as ``async with LocalRadio(3) as radio:``; ``radio.specs[i]`` opens controller
    ``i`` in this process, ``await radio.serve_tcp()`` exposes them to other processes.
    """

    def __init__(self, controllers: int) -> None:
        if controllers < 1:
            raise ValueError("a radio needs at least one controller")
        self._count = controllers
        self.link = LocalLink()
        self.controllers: list[VirtualController] = []
        self.specs: list[str] = []
        self._servers: list[HciTcpServer] = []

    async def open(self) -> None:
        radio_id = next(_radio_ids)
        for index in range(self._count):
            controller = VirtualController(f"R{radio_id}C{index}", link=self.link)
            spec = f"{LOCAL_SCHEME}r{radio_id}.{index}"
            register_local_controller(spec, controller)
            self.controllers.append(controller)
            self.specs.append(spec)

    async def serve_tcp(self, host: str = "127.0.0.1", base_port: int = 0) -> list[str]:
        """Serve controller ``i`` on ``base_port + i`` (any free ports when 0).

        Returns the ``tcp-client:`` spec of each controller, in order.
        """
        specs = []
        for index, controller in enumerate(self.controllers):
            server = HciTcpServer(controller)
            self._servers.append(server)
            port = await server.start(host, base_port + index if base_port else 0)
            specs.append(f"tcp-client:{host}:{port}")
        return specs

    async def close(self) -> None:
        for server in self._servers:
            await server.close()
        self._servers.clear()
        for spec, controller in zip(self.specs, self.controllers, strict=True):
            controller.detach_host()
            unregister_local_controller(spec)
            self.link.remove_controller(controller)
        self.controllers.clear()
        self.specs.clear()

    async def __aenter__(self) -> LocalRadio:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


READY_PREFIX = "radio ready:"


async def _serve(controllers: int, host: str, base_port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with LocalRadio(controllers) as radio:
        specs = await radio.serve_tcp(host, base_port)
        # One parseable line tells the parent process that every port is listening.
        print(READY_PREFIX, " ".join(specs), flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.ble.radio",
        description="Virtual BLE controllers on one shared link, each served over HCI/TCP.",
    )
    parser.add_argument("--controllers", type=int, default=2, help="number of controllers")
    parser.add_argument(
        "--base-port", type=int, default=0, help="port of controller 0 (0: any free ports)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    asyncio.run(_serve(args.controllers, args.host, args.base_port))


if __name__ == "__main__":
    main()
