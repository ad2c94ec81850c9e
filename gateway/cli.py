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

from gateway.config_cli import ConfigOption, load_or_exit
from gateway.errors import FieldgateError
from gateway.log_format import LogFormat, setup_logging


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


_LOGGER = logging.getLogger("gateway.cli")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"fieldgate {version('fieldgate')}")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """fieldgate: collect, score and alert on sensor-node data at the edge."""


def _operational_errors(exc: BaseException) -> list[FieldgateError] | None:
    """The FieldgateErrors a run ended with, if that is all it ended with (else None)."""
    if isinstance(exc, FieldgateError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        found: list[FieldgateError] = []
        for inner in exc.exceptions:
            errors = _operational_errors(inner)
            if errors is None:
                return None
            found += errors
        return found
    return None


@app.command()
def run(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML config file (FIELDGATE_* env vars override it)."),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Validate the configuration, print it and exit.")
    ] = False,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format", help="text for people, json (one object a line) for collectors."
        ),
    ] = "text",
) -> None:
    """Run the gateway service until SIGTERM/SIGINT.

    Every accepted node message is committed to the SQLite journal before the node
    (or the MQTT broker) is told it arrived.
    """
    cfg = load_or_exit(config)
    if check:
        Console().print_json(cfg.model_dump_json())
        _err.print("[green]configuration is valid[/green]")
        return
    setup_logging(cfg.log_level, log_format)
    from gateway.process_memory import tune_malloc

    tune_malloc()  # before the gateway allocates its state (gateway/process_memory.py)
    from gateway.app import Gateway, freeze_startup_heap, run_until_signalled
    from gateway.service_notify import ServiceNotifier

    try:
        gateway = Gateway(cfg, notifier=ServiceNotifier.from_environ())
        freeze_startup_heap()
        asyncio.run(run_until_signalled(gateway))
    except (FieldgateError, BaseExceptionGroup) as exc:
        # Operational faults (a port in use, a device missing) get one line each; the
        # traceback is there at DEBUG. Anything else is a bug and keeps its traceback.
        errors = _operational_errors(exc)
        if errors is None:
            raise
        for error in errors:
            _LOGGER.error("%s", error)
        _LOGGER.debug("traceback of the fault above", exc_info=exc)
        raise typer.Exit(1) from None


@app.command()
def doctor(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="The gateway's TOML config file."),
    ] = None,
) -> None:
    """Check config, data directory, disk, journal, ports, broker, serial, BLE and clock.

    Prints what to fix; exits 1 when something would stop the gateway working. Reads only:
    safe beside a running gateway (except the port check, which then reports the port in use).
    """
    from gateway.doctor import run_checks

    findings = run_checks(config)
    marks = {
        "ok": "[green]ok  [/green]",
        "warn": "[yellow]warn[/yellow]",
        "fail": "[red]FAIL[/red]",
    }
    out = Console()
    for f in findings:
        out.print(f"{marks[f.status]} {f.check}: {f.message}", highlight=False, soft_wrap=True)
        if f.fix and f.status != "ok":
            out.print(f"       fix: {f.fix}", highlight=False, soft_wrap=True)
    failed = sum(f.status == "fail" for f in findings)
    if failed:
        _err.print(f"[red]{failed} problem(s) to fix[/red]")
        raise typer.Exit(1)
    out.print("[green]no problems found[/green]")


@app.command()
def backup(
    dest: Annotated[Path, typer.Argument(help="A new directory to write the backup into.")],
    config: ConfigOption = None,
) -> None:
    """Back up the journal, alert history, baselines and outboxes; safe while running.

    Uses SQLite's online backup API: each file is a consistent snapshot even while the
    gateway writes it. Restore with `fieldgate restore DEST` (gateway stopped).
    """
    from gateway.backup import backup as run_backup

    cfg = load_or_exit(config)
    try:
        copied = run_backup(cfg, dest)
    except FileExistsError:
        _err.print(f"[red]{dest} exists[/red]: give a new directory")
        raise typer.Exit(2) from None
    for item in copied:
        Console().print(f"{item.name:<24} {item.bytes / 1e6:10.2f} MB", highlight=False)
    Console().print(f"[green]backed up {len(copied)} file(s) to {dest}[/green]")


@app.command()
def restore(
    source: Annotated[Path, typer.Argument(help="A directory written by `fieldgate backup`.")],
    config: ConfigOption = None,
) -> None:
    """Put a backup in place of the gateway's state. The gateway must be stopped."""
    from gateway.backup import GatewayRunning
    from gateway.backup import restore as run_restore

    cfg = load_or_exit(config)
    try:
        copied = run_restore(cfg, source)
    except GatewayRunning as exc:
        _err.print(f"[red]refused[/red]: {exc}")
        raise typer.Exit(1) from None
    except FileNotFoundError as exc:
        _err.print(f"[red]not a fieldgate backup[/red]: {exc}")
        raise typer.Exit(2) from None
    Console().print(f"[green]restored {len(copied)} file(s) from {source}[/green]")


def _register_journal_and_forward() -> None:
    from gateway.forward.cli import forward_app
    from gateway.identity.cli import nodes_app
    from gateway.pipeline.model_cli import model_app
    from gateway.store.journal_cli import journal_app

    app.add_typer(journal_app, name="journal")
    app.add_typer(forward_app, name="forward")
    app.add_typer(nodes_app, name="nodes")
    app.add_typer(model_app, name="model")
    from dashboards.cli import users_app

    app.add_typer(users_app)


_register_journal_and_forward()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
