"""The config option and config loading every command line shares (fieldgate's commands,
``fieldgate forward``, ``fieldgate users``): one message and one exit code for a bad config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gateway.config import GatewayConfig, load_config
from gateway.errors import ConfigError

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (FIELDGATE_* env vars override it)."),
]


def load_or_exit(config: Path | None) -> GatewayConfig:
    """The validated config, or exit 2 with the bad key named on stderr."""
    try:
        return load_config(config)
    except ConfigError as exc:
        Console(stderr=True).print(f"[red]invalid configuration[/red]: {exc}")
        raise typer.Exit(2) from None
