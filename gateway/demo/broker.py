"""A local MQTT broker for the demo: Debian's mosquitto when installed, else amqtt in-process."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found is None and Path("/usr/sbin/mosquitto").exists():
        found = "/usr/sbin/mosquitto"
    return found


@contextlib.asynccontextmanager
async def local_broker(workdir: Path, *, embedded: bool = False) -> AsyncIterator[tuple[str, str]]:
    """A broker on a free loopback port: mosquitto when installed, amqtt otherwise."""
    port = free_port()
    binary = None if embedded else _find_mosquitto()
    if binary:
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
            "log_dest none\n"
        )
        proc = await asyncio.create_subprocess_exec(binary, "-c", str(conf))
        try:
            for _ in range(100):
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                await asyncio.sleep(0.05)
            yield f"mqtt://127.0.0.1:{port}", "mosquitto"
        finally:
            proc.terminate()
            await proc.wait()
        return
    from amqtt.broker import Broker

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    try:
        yield f"mqtt://127.0.0.1:{port}", "amqtt (embedded)"
    finally:
        await broker.shutdown()
