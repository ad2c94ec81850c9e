"""The ``fieldgate`` command: the gateway service and its tools."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="fieldgate",
    help="fieldgate: an edge gateway that collects sensor-node data, scores it locally and alerts.",
    no_args_is_help=True,
    add_completion=False,
)


def _register_subcommands() -> None:
    # Sub-apps live next to the code they drive; imported here so `fieldgate --help`
    # lists them all.
    from firmware_tools.sim.cli import simulate

    app.command(name="simulate")(simulate)


def main() -> None:
    _register_subcommands()
    app()


if __name__ == "__main__":
    main()
