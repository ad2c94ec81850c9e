"""``fieldgate demo``: the command-line entry of the demo."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from gateway.demo.run import until_signalled
from gateway.demo.scenario import (
    DEFAULT_FAULT,
    DemoResult,
    Scenario,
    demo_node_ids,
)


def demo(  # noqa: PLR0917 - Typer maps options to parameters
    nodes: Annotated[int, typer.Option(help="Simulated pumps, alternating serial and MQTT.")] = 4,
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
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="Inject a labelled fault: node:kind:start_s:duration_s[:severity[:channel]] "
            f"(repeatable; default {DEFAULT_FAULT}; 'none' for no fault). Kinds: cavitation, "
            "valve_closed, bearing_outer, imbalance, overheating, sensor_stuck, spikes, leak.",
        ),
    ] = None,
    calibration_s: Annotated[
        float,
        typer.Option(help="Seconds of each node's readings that form its normal baseline."),
    ] = 30.0,
    node_model: Annotated[
        Path | None,
        typer.Option(
            help="A windowed int8 .tflite (manifest features.window beside it) the simulated "
            "nodes run; their scores fill the 'node score' column.",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of the simulated plant, to replay a run (default: a new one each run, "
            "as real nodes boot with new boot ids; printed in the summary).",
        ),
    ] = None,
    influx: Annotated[
        str | None,
        typer.Option(
            help="Forward summaries to this InfluxDB v2 write API (e.g. a VictoriaMetrics at "
            "http://127.0.0.1:8428); unreachable, the status shows the backlog growing.",
        ),
    ] = None,
) -> None:
    """Run the gateway with simulated nodes and show node status, scores and alerts live.

    Nodes alternate between serial (a pseudo-terminal each) and MQTT (a local broker:
    mosquitto if installed, else an embedded amqtt); BLE nodes talk GATT over Bumble
    virtual controllers on one shared virtual radio. Every reading goes through the
    real gateway: codecs, the durable SQLite journal, acknowledgements back to nodes,
    the gateway model (LiteRT) and the alert engine. After ``calibration_s`` each node
    is scored; the injected fault raises alerts (pressure_high, anomaly) that clear
    after it.
    """
    console = Console()
    # Through Rich, log lines print above the live view instead of tearing it.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    specs = [DEFAULT_FAULT] if fault is None else [f for f in fault if f.lower() != "none"]
    try:
        scenario = Scenario.parse(specs, calibration_s)
        scenario.check_nodes(demo_node_ids(nodes, ble_nodes))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fault") from None
    if seed is None:
        seed = random.SystemRandom().randrange(1_000_000)
    with tempfile.TemporaryDirectory(prefix="fieldgate-demo-") as tmp:
        target = data_dir or Path(tmp)
        target.mkdir(parents=True, exist_ok=True)
        result: DemoResult | None = None
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            result = asyncio.run(
                until_signalled(
                    nodes=nodes,
                    rate_hz=rate,
                    data_dir=target,
                    seconds=seconds,
                    ble_nodes=ble_nodes,
                    embedded_broker=embedded_broker,
                    scenario=scenario,
                    node_model=node_model,
                    console=console,
                    seed=seed,
                    influx=influx,
                )
            )
        if result is not None:
            console.print()
            console.print(result.summary(), highlight=False)
            console.print(f"seed: {seed} (--seed {seed} replays this plant)", highlight=False)
