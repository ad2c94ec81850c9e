"""What every ``flash-model`` command shares: the console and how errors end a command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from gateway.errors import FieldgateError, ModelError

if TYPE_CHECKING:
    pass


def console_for_output() -> Console:
    # Bound to the stdout of the moment: conversion swaps sys.stdout to hush Keras' prints.
    return Console(file=sys.stdout, soft_wrap=True)


def fail(console: Console, exc: FieldgateError) -> typer.Exit:
    console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def read_artifact(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc}") from exc
