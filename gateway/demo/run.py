"""Running the demo: broker, simulated fleet and gateway together until time or a signal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from dashboards.users import first_admin_password
from gateway.app import Gateway
from gateway.config import load_config
from gateway.demo.broker import local_broker
from gateway.demo.scenario import (
    DEFAULT_FAULT,
    AlertLog,
    DemoResult,
    Scenario,
    node_ids,
)
from gateway.demo.view import render
from gateway.forward.demo import demo_forward_config
from gateway.outputs.bus import Subscription
from gateway.store.journal_reader import JournalReader


async def _collect_alerts(sub: Subscription, log: AlertLog) -> None:
    async for item in sub:
        log.add(item)


async def run_demo(
    nodes: int,
    rate_hz: float,
    data_dir: Path,
    seconds: float | None,
    *,
    ble_nodes: int = 1,
    embedded_broker: bool = False,
    scenario: Scenario | None = None,
    node_model: Path | None = None,
    stop: asyncio.Event | None = None,
    console: Console | None = None,
    seed: int = 0,
    influx: str | None = None,
) -> DemoResult:
    """Run the demo until ``seconds`` pass or ``stop`` is set; everything started is stopped.

    ``scenario`` defaults to the one-fault story (:data:`DEFAULT_FAULT`, 30 s calibration).
    ``seed`` drives the simulated signals and the nodes' boot ids: a rerun against the same
    ``data_dir`` needs another seed, or its nodes repeat (node, boot, seq) and the journal
    takes everything for duplicates.
    """
    from firmware_tools.sim.fleet import SimConfig, Simulator
    from firmware_tools.sim.tflm import DEFAULT_NODE_MODEL
    from gateway.ble.radio import LocalRadio

    if scenario is None:
        scenario = Scenario.parse([DEFAULT_FAULT], 30.0)
    stop = stop or asyncio.Event()

    def sim_config(**kw: Any) -> SimConfig:
        return SimConfig(
            rate_hz=rate_hz,
            batch_size=5,
            site="demo",
            status_interval_ms=5000,
            model=node_model or DEFAULT_NODE_MODEL,  # nodes run the shipped node model
            **({"seed": seed} | kw),
        )

    async with (
        local_broker(data_dir, embedded=embedded_broker) as (broker_url, broker_name),
        # One virtual controller for the gateway and one per BLE node, on one shared "air".
        LocalRadio(1 + ble_nodes) as radio,
        contextlib.AsyncExitStack() as stack,
    ):
        # Nodes start sampling as their Simulator is entered: that is simulation time 0.
        sim_t0_ms = time.time_ns() // 1_000_000
        sims = [
            await stack.enter_async_context(
                Simulator(
                    sim_config(
                        nodes=nodes,
                        transports=("serial", "mqtt"),
                        broker_url=broker_url,
                        pty_dir=data_dir / "tty",
                        faults=scenario.faults_for(node_ids("pump", nodes)),
                    )
                )
            )
        ]
        for i in range(ble_nodes):
            prefix = f"vib{i + 1}"
            sims.append(
                await stack.enter_async_context(
                    Simulator(
                        sim_config(
                            nodes=1,
                            node_prefix=prefix,
                            transports=("ble",),
                            ble_transport=radio.specs[1 + i],
                            seed=seed + 100 + i,
                            faults=scenario.faults_for(node_ids(prefix, 1)),
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
            scoring=scenario.scoring_config(rate_hz),
            alerts=scenario.alerts_config(),
            forward=demo_forward_config(influx),
            web={"enabled": True, "port": 0},
        )
        web_password = first_admin_password(data_dir)
        gateway = Gateway(cfg)
        result = DemoResult(gateway, AlertLog(), sim_t0_ms=sim_t0_ms)
        started = time.monotonic()
        # Subscribed before the gateway runs, so the view misses no event.
        subscription = gateway.alert_bus.subscribe(256)
        async with asyncio.TaskGroup() as tg:
            gw_task = tg.create_task(gateway.run(), name="demo:gateway")
            sim_tasks = [
                tg.create_task(sim.run_for(None), name=f"demo:simulator:{i}")
                for i, sim in enumerate(sims)
            ]
            alert_task = tg.create_task(
                _collect_alerts(subscription, result.alerts), name="demo:alerts"
            )
            await gateway.writer.ready.wait()
            await gateway.web_ready.wait()
            _print_dashboard(console, gateway, web_password)
            reader = JournalReader(cfg.journal_path)
            try:
                with Live(refresh_per_second=2, screen=False, console=console) as live:
                    while not stop.is_set() and (
                        seconds is None or time.monotonic() - started < seconds
                    ):
                        stats = {k: v for sim in sims for k, v in sim.stats().items()}
                        live.update(
                            render(
                                reader,
                                gateway,
                                stats,
                                broker_name,
                                started,
                                scenario=scenario,
                                sim_time_s=sims[0].now_ms() / 1000,
                                alerts=result.alerts,
                            )
                        )
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(0.5):
                                await stop.wait()
                result.seconds = time.monotonic() - started
            finally:
                reader.close()
                for sim in sims:
                    sim.stop()
                gw_task.cancel()
                for task in sim_tasks:
                    task.cancel()
                subscription.close()
                if not alert_task.done():
                    # Let it take what is queued, then it ends with the closed subscription.
                    await asyncio.wait({alert_task}, timeout=1.0)
                alert_task.cancel()
        # Counted once the gateway has stopped: until then it may still commit what the
        # nodes sent, and the summary must match the journal it leaves behind.
        final = JournalReader(cfg.journal_path)
        try:
            rows = final.nodes()
        finally:
            final.close()
        result.readings = sum(row.received for row in rows)
        result.nodes = len(rows)
    return result


async def until_signalled(**kwargs: Any) -> DemoResult:
    # The first SIGTERM/SIGINT ends the demo like its time limit does, so the summary is
    # printed and the broker, ptys and radio we started are cleaned up; a second one cancels.
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.current_task()
    assert task is not None

    def on_signal() -> None:
        if stop.is_set():
            task.cancel()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        return await run_demo(stop=stop, **kwargs)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _print_dashboard(console: Console | None, gateway: Gateway, password: str | None) -> None:
    assert gateway.web_view is not None
    url = f"http://127.0.0.1:{gateway.web_view.bound_port[0]}/"
    login = f"user admin, one-time password {password}" if password else "your existing users"
    (console or Console()).print(f"[bold]Dashboard[/bold]: {url}  (sign in: {login})")
