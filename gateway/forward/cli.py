"""``fieldgate forward status|drain|export``: the operator's view of the upstream backlog."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, cast

import typer
from rich.console import Console
from rich.table import Table

from gateway.config_cli import ConfigOption, load_or_exit

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

forward_app = typer.Typer(
    name="forward",
    help=(
        "The upstream backlog: summaries, alerts and events waiting for the time-series store "
        "(the forward section of the config; docs/forwarding.md)."
    ),
    no_args_is_help=True,
)
_out = Console()
_err = Console(stderr=True)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@forward_app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """What waits to be sent, per class against its budget; evictions; quarantined batches."""
    from gateway.forward.backlog import Backlog

    cfg = load_or_exit(config)
    fwd = cfg.forward
    path = fwd.backlog_path(cfg.data_dir)
    if not path.exists():
        _err.print(
            f"no backlog at {path} (forwarding never ran{'' if fwd.enabled else '; [forward] is disabled'})"
        )
        raise typer.Exit(1)
    backlog = Backlog(path, fwd.budgets).open()
    try:
        stats = backlog.stats(fwd.destination)
        quarantined = backlog.quarantined()
    finally:
        backlog.close()
    age_s = (
        (time.time() * 1000 - stats.oldest_enqueued_ms) / 1000 if stats.oldest_enqueued_ms else 0.0
    )
    if as_json:
        data = {
            "destination": fwd.destination, "enabled": fwd.enabled, "points": stats.points,
            "bytes": stats.bytes, "oldest_undelivered_age_s": round(age_s, 3),
            "evictions": stats.evictions, "checkpoints": stats.checkpoints,
            "quarantined_batches": stats.quarantined_batches,
            "quarantined_points": stats.quarantined_points,
        }  # fmt: skip
        _out.print_json(json.dumps(data))
        return
    b = fwd.budgets
    budgets = {"alert": f"{_human(b.alerts_bytes)} (never evicted)", "event": _human(b.events_bytes),
               "summary": "(total)", "raw": _human(b.raw_bytes)}  # fmt: skip
    table = Table(title=f"backlog {path} → {fwd.url} bucket {fwd.bucket}")
    for col in ("class", "points", "bytes", "budget"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for cls, n in stats.points.items():
        table.add_row(cls, str(n), _human(stats.bytes[cls]), budgets.get(cls, ""))
    table.add_row(
        "total",
        str(stats.total_points),
        _human(stats.total_bytes),
        f"{_human(b.total_bytes)} (raw+summary+event)",
    )
    _out.print(table)
    _out.print(
        f"oldest undelivered: {age_s:.0f} s ago" if stats.total_points else "nothing waiting"
    )
    _out.print(
        "evicted: " + ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in stats.evictions.items())
    )
    for dest, through in stats.checkpoints.items():
        _out.print(f"checkpoint {dest}: confirmed through id {through}")
    if quarantined:
        _out.print(
            f"[yellow]{len(quarantined)} quarantined batches ({stats.quarantined_points} points):[/yellow]"
        )
        for code, points, reason, at_ms in quarantined[-5:]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at_ms / 1000))
            _out.print(f"  {when}Z HTTP {code}, {points} points: {reason[:160]}")


@forward_app.command()
def drain(
    config: ConfigOption = None,
    timeout_s: Annotated[
        float, typer.Option("--timeout", help="Give up after this many seconds.")
    ] = 600.0,
) -> None:
    """Send the backlog now and exit when it is empty (waits while the gateway itself drains)."""
    cfg = load_or_exit(config)
    from gateway.cli import setup_logging

    setup_logging("WARNING")
    path = cfg.forward.backlog_path(cfg.data_dir)
    if not path.exists():
        _err.print(f"no backlog at {path}")
        raise typer.Exit(1)
    sent, left = asyncio.run(_drain(cfg, path, timeout_s))
    _out.print(f"sent {sent} points to {cfg.forward.url}; {left} still waiting")
    if left:
        raise typer.Exit(1)


async def _drain(cfg: GatewayConfig, path: Path, timeout_s: float) -> tuple[int, int]:
    from gateway.forward.forwarder import Forwarder

    # Now means now: no waiting for a partial batch to fill.
    now = cfg.forward.model_copy(update={"batch_max_age_s": 0.0})
    fwd = Forwarder(now, site=cfg.site, journal_path=cfg.journal_path, backlog_path=path)
    task = asyncio.create_task(fwd.run(summarise=False), name="forward:cli-drain")
    try:
        async with asyncio.timeout(timeout_s):
            await fwd.ready.wait()
            await fwd.idle.wait()
    except TimeoutError:
        _err.print(
            f"[yellow]timed out after {timeout_s:g} s[/yellow] ({fwd.last_error or 'still sending'})"
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return fwd.delivered_points, sum(fwd.backlog.counts()[0].values())


@forward_app.command()
def export(
    output: Annotated[Path, typer.Argument(help="File to write (line protocol; .gz compresses).")],
    config: ConfigOption = None,
    mark_delivered: Annotated[
        bool,
        typer.Option("--mark-delivered", help="Advance the checkpoint past what was exported."),
    ] = False,
    quarantined: Annotated[
        bool,
        typer.Option(
            "--quarantined", help="Export the quarantined points (refused by the store) instead."
        ),
    ] = False,
) -> None:
    """Write the waiting points as line protocol, for an upload by hand (sneakernet).

    Upload with e.g. `influx write -b BUCKET -f FILE` or `curl --data-binary @FILE
    URL/api/v2/write?bucket=...&precision=ms`. Resending a point later overwrites it (same
    identity), so exporting without --mark-delivered is always safe.
    """
    from gateway.forward.backlog import Backlog, Batch

    cfg = load_or_exit(config)
    fwd = cfg.forward
    path = fwd.backlog_path(cfg.data_dir)
    if not path.exists():
        _err.print(f"no backlog at {path}")
        raise typer.Exit(1)
    backlog = Backlog(path, fwd.budgets, precision=fwd.precision).open()
    try:
        after = backlog.checkpoint(fwd.destination)
        lines = backlog.quarantined_lines() if quarantined else backlog.lines(after)
        if output.suffix == ".gz":
            with gzip.open(output, "wb") as gz:
                n, first, last = _write_lines(lines, cast("IO[bytes]", gz))
        else:
            with output.open("wb") as fh:
                n, first, last = _write_lines(lines, fh)
        if mark_delivered and n and not quarantined:
            backlog.delivered(fwd.destination, Batch(first, last, []))
    finally:
        backlog.close()
    note = "; checkpoint advanced" if mark_delivered and n and not quarantined else ""
    _out.print(f"exported {n} points ({fwd.precision} precision) to {output}{note}")


def _write_lines(lines: Iterator[tuple[int, bytes]], sink: IO[bytes]) -> tuple[int, int, int]:
    """(points written, first id, last id) of ``lines``."""
    n, first, last = 0, 0, 0
    for pid, line in lines:
        sink.write(line + b"\n")
        first = first or pid
        last, n = pid, n + 1
    return n, first, last
