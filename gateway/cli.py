"""The ``fieldgate`` command: the gateway service and its tools."""

from __future__ import annotations

import asyncio
import importlib
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
from rich.console import Console
from typer.core import TyperGroup

from gateway.errors import ConfigError


class _LazyCommands(TyperGroup):
    """Sub-commands that compose the service with the simulator, imported only when used.

    ``fieldgate run`` therefore never imports the simulator, ``rich.live`` or amqtt
    (checked by tests/unit/test_layering.py); ``fieldgate --help`` still lists them all.
    """

    LAZY: dict[str, tuple[str, str]] = {  # noqa: RUF012 - a constant table, never mutated
        "simulate": ("firmware_tools.sim.cli", "simulate"),
        "demo": ("gateway.demo.command", "demo"),
    }

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *self.LAZY]

    # Any: the context and command types are Typer's vendored click, which it does not export.
    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.LAZY:
            return super().get_command(ctx, cmd_name)
        module, attr = self.LAZY[cmd_name]
        single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
        single.command(name=cmd_name)(getattr(importlib.import_module(module), attr))
        return typer.main.get_command(single)


app = typer.Typer(
    cls=_LazyCommands,
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


@app.callback()
def _root() -> None:
    # A callback keeps `fieldgate` a command group although only `run` is registered
    # eagerly (the others come from _LazyCommands).
    pass


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
