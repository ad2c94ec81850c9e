"""``fieldgate users``: manage the dashboard's users and API tokens in ``<data_dir>/web.db``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dashboards.users import Role, UserError, UserStore, web_db_path
from gateway.config_cli import ConfigOption, load_or_exit

users_app = typer.Typer(
    name="users",
    help="Dashboard users: roles viewer (read), operator (acknowledge, silence), admin (users).",
    no_args_is_help=True,
)
_err = Console(stderr=True)
StdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


def _store(config: Path | None) -> UserStore:
    return UserStore(web_db_path(load_or_exit(config).data_dir))


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
def add(
    name: str,
    role: Annotated[str, typer.Option(help="viewer, operator or admin")] = "viewer",
    config: ConfigOption = None,
    password_stdin: StdinOption = False,
) -> None:
    """Add a user; they must change the password at their first sign-in."""
    try:
        role_value = Role[role.upper()]
    except KeyError:
        _err.print(f"[red]unknown role {role!r}[/red]: choose viewer, operator or admin")
        raise typer.Exit(2) from None
    store = _store(config)
    try:
        store.add(name, role_value, _password(password_stdin), must_change=True)
        store.audit("cli", "user.create", name, role_value.name.lower())
    except UserError as exc:
        _err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        store.close()
    _err.print(f"added {name} ({role_value.name.lower()})")


@users_app.command("passwd")
def passwd(name: str, config: ConfigOption = None, password_stdin: StdinOption = False) -> None:
    """Set a user's password (for example a forgotten admin password)."""
    store = _store(config)
    try:
        store.set_password(name, _password(password_stdin))
        store.audit("cli", "user.passwd", name)
    except UserError as exc:
        _err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        store.close()
    _err.print(f"password of {name} changed (running sessions keep going until they expire)")


@users_app.command("list")
def list_users(config: ConfigOption = None) -> None:
    """List the users and their roles."""
    store = _store(config)
    try:
        table = Table("name", "role", "password")
        for user in store.all():
            table.add_row(
                user.name, user.role.name.lower(), "one-time" if user.must_change else "set"
            )
    finally:
        store.close()
    Console().print(table)


@users_app.command("token")
def token(
    name: str,
    label: Annotated[str, typer.Option(help="what the token is for")] = "api",
    config: ConfigOption = None,
) -> None:
    """Create an API token for a user (printed once; use as `Authorization: Bearer ...`)."""
    store = _store(config)
    try:
        value = store.new_token(name, label)
        store.audit("cli", "token.create", name, label)
    except UserError as exc:
        _err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        store.close()
    print(value)
