"""``fieldgate demo``: the gateway with simulated nodes and a live terminal view.

Everything runs on embedded defaults: a journal in SQLite under a temporary (or
given) directory, the node simulator on real pseudo-terminals and MQTT, and a
broker — Debian's mosquitto if installed, else the pure-Python amqtt broker
in-process. No cloud, no hand-installed service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gateway.app import Gateway
from gateway.config import load_config
from gateway.store.journal import JournalReader

_LOGGER = logging.getLogger(__name__)


def _free_port() -> int:
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
    port = _free_port()
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


def render(reader: JournalReader, gateway: Gateway, sim_stats: dict[str, dict[str, int]],
           broker: str, started: float) -> Group:  # fmt: skip
    table = Table(title="fieldgate — live node status", expand=True)
    for col in ("node", "transport", "boot", "last seen", "readings", "dups", "lost",
                "complete", "battery", "rssi", "sim sent/acked"):  # fmt: skip
        table.add_column(col, justify="right" if col not in ("node", "transport") else "left")
    now_ms = time.time() * 1000
    for row in reader.nodes():
        st = sim_stats.get(row.node_id, {})
        age = (now_ms - row.last_seen_ms) / 1000
        table.add_row(
            row.node_id,
            row.transport,
            f"{row.boot_id:08x}",
            Text(f"{age:4.1f} s ago", style="green" if age < 5 else "red"),
            str(row.received),
            str(row.duplicates),
            str(row.lost),
            f"{100 * row.completeness:5.1f} %",
            f"{row.battery_mv} mV" if row.battery_mv else "-",
            f"{row.rssi_dbm} dBm" if row.rssi_dbm is not None else "-",
            f"{st.get('sent', '-')}/{st.get('acked', '-')}",
        )
    m = gateway.metrics
    footer = Text(
        f"uptime {time.monotonic() - started:5.0f} s · broker {broker} · journal "
        f"{gateway.config.journal_path} · commits {m.commits} · malformed "
        f"{sum(m.malformed.values())} · queue {gateway.queue.qsize()} · Ctrl-C to stop",
        style="dim",
    )
    return Group(table, footer)


async def run_demo(
    nodes: int,
    rate_hz: float,
    data_dir: Path,
    seconds: float | None,
    *,
    ble_nodes: int = 1,
    embedded_broker: bool = False,
) -> Gateway:
    from firmware_tools.sim.fleet import SimConfig, Simulator
    from gateway.ble.radio import LocalRadio

    def sim_config(**kw: Any) -> SimConfig:
        return SimConfig(rate_hz=rate_hz, batch_size=5, site="demo", status_interval_ms=5000, **kw)

    async with (
        local_broker(data_dir, embedded=embedded_broker) as (broker_url, broker_name),
        # One virtual controller for the gateway and one per BLE node, on one shared "air".
        LocalRadio(1 + ble_nodes) as radio,
        contextlib.AsyncExitStack() as stack,
    ):
        sims = [
            await stack.enter_async_context(
                Simulator(
                    sim_config(
                        nodes=nodes,
                        transports=("serial", "mqtt"),
                        broker_url=broker_url,
                        pty_dir=data_dir / "tty",
                    )
                )
            )
        ]
        for i in range(ble_nodes):
            sims.append(
                await stack.enter_async_context(
                    Simulator(
                        sim_config(
                            nodes=1,
                            node_prefix=f"vib{i + 1}",
                            transports=("ble",),
                            ble_transport=radio.specs[1 + i],
                            seed=100 + i,
                        )
                    )
                )
            )
        for sim in sims:
            await sim.wait_ready()
        addresses = {k: v for sim in sims for k, v in sim.addresses().items()}
        cfg = load_config(
            site="demo",
            data_dir=str(data_dir),
            mqtt={"enabled": True, "url": broker_url, "client_id": "fieldgate-demo"},
            serial={
                "ports": [
                    {"path": address, "baud": 115_200}
                    for kind, address in addresses.values()
                    if kind == "serial"
                ]
            },
            ble={
                "enabled": ble_nodes > 0,
                "transport": radio.specs[0],
                "nodes": [n for n, (kind, _) in addresses.items() if kind == "ble"],
                "reconnect_max_s": 2.0,
            },
            metrics={"enabled": True, "port": 0},
        )
        gateway = Gateway(cfg)
        started = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            gw_task = tg.create_task(gateway.run(), name="demo:gateway")
            sim_tasks = [
                tg.create_task(sim.run_for(None), name=f"demo:simulator:{i}")
                for i, sim in enumerate(sims)
            ]
            await gateway.writer.ready.wait()
            reader = JournalReader(cfg.journal_path)
            try:
                with Live(refresh_per_second=2, screen=False) as live:
                    while seconds is None or time.monotonic() - started < seconds:
                        stats = {k: v for sim in sims for k, v in sim.stats().items()}
                        live.update(render(reader, gateway, stats, broker_name, started))
                        await asyncio.sleep(0.5)
            finally:
                reader.close()
                for sim in sims:
                    sim.stop()
                gw_task.cancel()
                for task in sim_tasks:
                    task.cancel()
    return gateway


async def _until_signalled(work: Coroutine[Any, Any, Gateway]) -> None:
    # SIGTERM cancels like Ctrl-C does, so the broker and ptys we started are cleaned up.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    await work


def demo(  # noqa: PLR0917 - Typer maps options to parameters
    nodes: Annotated[int, typer.Option(help="Simulated nodes, alternating serial and MQTT.")] = 4,
    ble_nodes: Annotated[
        int, typer.Option(help="Extra simulated BLE nodes (Bumble virtual radio).")
    ] = 1,
    rate: Annotated[float, typer.Option(help="Readings per second per node.")] = 5.0,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the journal goes (default: a temporary directory).")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this long (default: run until Ctrl-C).")
    ] = None,
    embedded_broker: Annotated[
        bool, typer.Option(help="Use the embedded amqtt broker even if mosquitto is installed.")
    ] = False,
) -> None:
    """Run the gateway with simulated nodes and show live node status in the terminal.

    Nodes alternate between serial (a pseudo-terminal each) and MQTT (a local broker:
    mosquitto if installed, else an embedded amqtt); BLE nodes talk GATT over Bumble
    virtual controllers on one shared virtual radio. Every reading goes through the
    real gateway: codecs, the durable SQLite journal, acknowledgements back to nodes.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="fieldgate-demo-") as tmp:
        target = data_dir or Path(tmp)
        target.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(
                _until_signalled(
                    run_demo(nodes, rate, target, seconds, embedded_broker=embedded_broker)
                )
            )
