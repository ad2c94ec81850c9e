"""``fieldgate journal check|recover``: is the journal sound, and salvage a damaged one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gateway.store.journal_schema import SCHEMA
from gateway.store.recovery import journal_problem, recover

journal_app = typer.Typer(help="Check the journal, or salvage a damaged one.", no_args_is_help=True)
_out = Console()
_err = Console(stderr=True)


@journal_app.command()
def check(
    path: Annotated[Path, typer.Argument(help="The journal file (default <data_dir>/journal.db).")],
) -> None:
    """Run SQLite's quick_check on the journal; exit 1 if it is damaged or empty."""
    if not path.exists():
        _err.print(f"[red]{path} does not exist[/red]")
        raise typer.Exit(2)
    problem = journal_problem(path)
    if problem is not None:
        _out.print(f"[red]damaged[/red]: {path}: {problem}")
        _out.print(f"salvage with: fieldgate journal recover {path}")
        raise typer.Exit(1)
    _out.print(f"[green]ok[/green]: {path} passes quick_check")


@journal_app.command(name="recover")
def recover_cmd(
    path: Annotated[Path, typer.Argument(help="The damaged journal (e.g. journal.db.damaged-…).")],
    to: Annotated[
        Path | None,
        typer.Option("--to", help="Where to write the salvage (default PATH.recovered)."),
    ] = None,
) -> None:
    """Copy every readable row of a damaged journal into a new journal file.

    The result is a normal journal: inspect it, or stop the gateway and put it in place of
    journal.db. The damaged file is left untouched.
    """
    target = to or path.with_name(path.name + ".recovered")
    try:
        salvage = recover(path, target, SCHEMA)
    except FileExistsError as exc:
        _err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    _out.print(f"recovered {path} -> {target}")
    for table, n in salvage.rows.items():
        note = "  (damaged pages skipped)" if table in salvage.damaged_tables else ""
        _out.print(f"  {table:<14} {n:>10} rows{note}")
    if salvage.problem_after is not None:
        _err.print(f"[red]the salvage itself fails its check: {salvage.problem_after}[/red]")
        raise typer.Exit(1)
