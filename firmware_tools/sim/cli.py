"""``fieldgate simulate``: run a fleet of simulated sensor nodes from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from firmware_tools.sim.fleet import SimConfig, Simulator
from firmware_tools.sim.signals import FaultKind, parse_fault_spec
from firmware_tools.sim.tflm import DEFAULT_NODE_MODEL

_FAULT_KINDS = ", ".join(k.name.lower() for k in FaultKind if k is not FaultKind.NORMAL)
_COLUMNS = (
    ("sent", "sent"),
    ("acked", "acked"),
    ("resent", "resent"),
    ("evicted", "evicted"),
    ("reboots", "reboots"),
    ("unacked", "unacked"),
    ("inferences", "infer"),
    ("link_dropped", "link drop"),
)


def simulate(  # noqa: PLR0917 - Typer maps each option to a parameter
    nodes: Annotated[int, typer.Option("--nodes", "-n", min=1, help="How many nodes.")] = 3,
    transport: Annotated[
        list[str] | None,
        typer.Option(
            "--transport",
            "-t",
            help="serial, mqtt or ble. Repeat to mix; nodes take them round-robin "
            "(-t serial -t mqtt: pump-01 serial, pump-02 mqtt, pump-03 serial...).",
        ),
    ] = None,
    broker: Annotated[
        str, typer.Option(help="MQTT broker for mqtt nodes, mqtt://host:port.")
    ] = "mqtt://127.0.0.1:1883",
    site: Annotated[
        str, typer.Option(help="Site name: MQTT topics are fieldgate/<site>/<node>/<kind>.")
    ] = "demo",
    rate: Annotated[float, typer.Option(min=0.001, help="Samples per second per node.")] = 1.0,
    batch: Annotated[int, typer.Option(min=1, help="Samples per ReadingBatch message.")] = 10,
    baud: Annotated[
        int, typer.Option(min=300, help="Emulated baud rate of serial nodes (writes are paced).")
    ] = 115_200,
    pty_dir: Annotated[
        Path | None,
        typer.Option(
            help="Make stable symlinks <dir>/tty<node> to each serial node's /dev/pts/N, so "
            "a gateway config survives unplug/replug. Default: print the /dev/pts paths."
        ),
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            "-f",
            help="Inject a labelled fault: node:kind:start_s:duration_s[:severity[:channel]] "
            f"(node * = all nodes). Kinds: {_FAULT_KINDS}. Example: pump-02:cavitation:30:20.",
        ),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            help="Replay a SKAB-layout CSV file or folder (';'-separated) instead of the "
            "synthetic pump; rows marked anomaly=1 are labelled.",
        ),
    ] = None,
    speedup: Annotated[
        float, typer.Option(min=0.001, help="Time compression for --replay (60: 1 h in 1 min).")
    ] = 1.0,
    model: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="int8 .tflite run on each node by the TFLite Micro interpreter (manifest "
            "<model>.json beside it, if any); nodes then send NodeInference messages. "
            "Default: the shipped node model over vib_rms, current, pressure and flow.",
        ),
    ] = DEFAULT_NODE_MODEL,
    no_model: Annotated[
        bool, typer.Option("--no-model", help="Nodes run no model (readings only).")
    ] = False,
    duration: Annotated[
        float | None, typer.Option(min=0.0, help="Seconds to run (default: until Ctrl-C).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for signals, noise and boot ids.")] = 0,
    json_payloads: Annotated[
        bool, typer.Option("--json", help="MQTT nodes publish the JSON form instead of CBOR.")
    ] = False,
    ble_hci: Annotated[
        str | None,
        typer.Option(help="HCI transport for ble nodes, e.g. tcp-client:127.0.0.1:9000."),
    ] = None,
    ble_beacon: Annotated[
        bool,
        typer.Option(help="BLE nodes only advertise their latest reading (no GATT, no acks)."),
    ] = False,
    live: Annotated[bool, typer.Option(help="Show a live table of per-node counters.")] = True,
) -> None:
    """Simulate sensor nodes (pumps with vibration, current, pressure, temperature).

    Each node numbers its messages per boot, keeps what the gateway has not acknowledged
    and resends it, sends a heartbeat Status, obeys commands, and can run an int8 model.
    Serial nodes appear as pseudo-terminals for the gateway to open; MQTT nodes publish to
    the broker. Faults are injected on schedule and labelled, for scoring alerts.
    """
    transports = tuple(transport or ["serial"])
    faults = []
    try:
        for spec in fault or []:
            faults.append(parse_fault_spec(spec))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fault") from None
    try:
        config = SimConfig(
            nodes=nodes,
            transports=transports,
            rate_hz=rate,
            batch_size=batch,
            faults=tuple(faults),
            seed=seed,
            broker_url=broker,
            site=site,
            json_payloads=json_payloads,
            baud=baud,
            pty_dir=pty_dir,
            ble_transport=ble_hci,
            ble_beacon=ble_beacon,
            replay=replay,
            replay_speedup=speedup,
            model=None if no_model else model,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console = Console()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(config, duration, console, live=live))


async def _run(config: SimConfig, duration: float | None, console: Console, *, live: bool) -> None:
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main is not None:
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
    async with Simulator(config) as sim:
        for node_id, (kind, address) in sim.addresses().items():
            # soft_wrap: paths and topics are for copying, never broken across lines
            console.print(f"[bold]{node_id}[/] {kind:<6} {address}", soft_wrap=True)
        if not live:
            await sim.run_for(duration)
        else:
            with Live(_table(sim), console=console, refresh_per_second=2) as view:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(_refresh(sim, view), name="sim:cli:refresh")
                    await sim.run_for(duration)
                    sim.stop()
        final = _table(sim)
    if not live:
        console.print(final)


async def _refresh(sim: Simulator, view: Live) -> None:
    while not sim.stopped:
        view.update(_table(sim))
        await asyncio.sleep(0.5)
    view.update(_table(sim))


def _table(sim: Simulator) -> Table:
    table = Table(title=f"fieldgate simulator - t = {sim.now_ms() / 1000:.1f} s", expand=False)
    table.add_column("node")
    table.add_column("link")
    for _key, title in _COLUMNS:
        table.add_column(title, justify="right")
    for node_id, stats in sim.stats().items():
        link = sim.nodes[node_id].link
        state = link.kind if link.ready.is_set() else f"{link.kind} (down)"
        table.add_row(node_id, state, *(str(stats[key]) for key, _ in _COLUMNS))
    return table
