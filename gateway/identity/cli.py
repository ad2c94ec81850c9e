"""``fieldgate nodes pins|unpin``: where each node is pinned, and forgetting a pin."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gateway.config_cli import ConfigOption, load_or_exit
from gateway.identity.pins import pins_path_for, read_pins, unpin

nodes_app = typer.Typer(
    help="Node pins: which serial port, BLE address or broker each node must speak from.",
    no_args_is_help=True,
)
_out = Console()


def _pins_file(config: Path | None) -> tuple[Path, dict[str, str]]:
    cfg = load_or_exit(config)
    return pins_path_for(cfg.data_dir), dict(cfg.nodes.pins)


@nodes_app.command()
def pins(config: ConfigOption = None) -> None:
    """List the pins, one tab-separated line each: node, channel, configured or learned when."""
    path, configured = _pins_file(config)
    learned = read_pins(path)
    if not configured and not learned:
        _out.print(f"no pins yet ({path})")
        return
    for node, channel in sorted(configured.items()):
        typer.echo(f"{node}\t{channel}\tconfigured")
    for node, entry in sorted(learned.items()):
        if node in configured:
            continue
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(str(entry["since_ms"])) / 1000))
        typer.echo(f"{node}\t{entry['channel']}\tlearned {since} UTC")


@nodes_app.command(name="unpin")
def unpin_cmd(
    nodes: Annotated[list[str], typer.Argument(help="Node ids whose learned pin to forget.")],
    config: ConfigOption = None,
) -> None:
    """Forget learned pins: each node is pinned again to the channel it is next heard on.

    Works while the gateway runs (it reads the file again). A pin set in the config
    (nodes.pins) is changed there instead."""
    path, configured = _pins_file(config)
    gone = unpin(path, nodes)
    for node in nodes:
        if node in gone:
            _out.print(f"{node}: unpinned; its next contact pins it again", markup=False)
        elif node in configured:
            _out.print(f"{node}: pinned in the config (nodes.pins): change it there", markup=False)
        else:
            _out.print(f"{node}: was not pinned", markup=False)
    if not gone:
        raise typer.Exit(1)
