"""The ``fieldgate`` command: the gateway service and its tools."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gateway.errors import ConfigError

app = typer.Typer(
    name="fieldgate",
    help=(
        "fieldgate: an edge gateway that collects sensor-node data over serial, BLE and MQTT "
        "into a durable journal, scores it locally and raises alerts."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_err = Console(stderr=True)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


@app.command()
def run(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML config file (FIELDGATE_* env vars override it)."),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Validate the configuration, print it and exit.")
    ] = False,
) -> None:
    """Run the gateway service until SIGTERM/SIGINT.

    Every accepted node message is committed to the SQLite journal before the node
    (or the MQTT broker) is told it arrived.
    """
    from gateway.config import load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        _err.print(f"[red]invalid configuration[/red]: {exc}")
        raise typer.Exit(2) from None
    if check:
        Console().print_json(cfg.model_dump_json())
        _err.print("[green]configuration is valid[/green]")
        return
    setup_logging(cfg.log_level)
    from gateway.app import Gateway, freeze_startup_heap, run_until_signalled

    gateway = Gateway(cfg)
    freeze_startup_heap()
    asyncio.run(run_until_signalled(gateway))


def _register_subcommands() -> None:
    # Sub-apps live next to the code they drive; imported here so `fieldgate --help`
    # lists them all.
    from firmware_tools.sim.cli import simulate

    app.command(name="simulate")(simulate)
    from gateway.demo import demo

    app.command(name="demo")(demo)
    from dashboards.cli import users_app

    app.add_typer(users_app)


def main() -> None:
    _register_subcommands()
    app()


if __name__ == "__main__":
    main()
