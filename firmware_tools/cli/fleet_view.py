"""How the fleet commands show their work: progress bars, result tables, node slots."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from rich.console import Console

if TYPE_CHECKING:
    from firmware_tools.flash.api import FlashResult
    from firmware_tools.flash.orchestrate import DryRunRow
    from gateway.protocol.manifest import ModelManifest
    from gateway.protocol.slots import NodeInfo


class ProgressObserver:
    """One Rich progress bar per node: bytes, rate, ETA, and what it is doing."""

    def __init__(self, console: Console, transports: dict[str, str]) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        )
        self._tasks = {
            node_id: self._progress.add_task(f"{node_id} ({t})", total=None, status="queued")
            for node_id, t in transports.items()
        }

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def phase(self, node_id: str, text: str) -> None:
        self._progress.update(self._tasks[node_id], status=text)

    def progress(self, node_id: str, done: int, total: int) -> None:
        self._progress.update(self._tasks[node_id], completed=done, total=total)

    def finished(self, result: FlashResult) -> None:
        self._progress.update(
            self._tasks[result.node_id], status=_outcome_text(result.outcome.value)
        )


_OUTCOME_STYLE = {
    "flashed": "green",
    "already_current": "green",
    "would flash": "green",
    "already current": "green",
}


def _outcome_text(outcome: str) -> str:
    return f"[{_OUTCOME_STYLE.get(outcome, 'red')}]{outcome}[/]"


def render_results(console: Console, results: list[FlashResult]) -> None:
    from rich.table import Table

    table = Table(title="flash results")
    for col in ("node", "transport", "version", "bytes", "seconds", "tries", "outcome"):
        table.add_column(col, justify="right" if col in ("bytes", "seconds", "tries") else "left")
    for r in results:
        table.add_row(
            r.node_id,
            r.transport,
            f"{r.old_version or '-'} → {r.new_version}",
            str(r.bytes_sent),
            f"{r.seconds:.1f}",
            str(r.attempts),
            _outcome_text(r.outcome.value),
        )
    console.print(table)
    for r in results:
        if r.reason and r.outcome.value not in ("flashed", "already_current"):
            # Errors raised by transports already start with the node id.
            reason = r.reason.removeprefix(f"{r.node_id}: ")
            console.print(f"[red]{r.node_id}:[/red] {reason}", highlight=False)


def render_dry_run(console: Console, rows: list[DryRunRow], m: ModelManifest) -> None:
    from rich.table import Table

    table = Table(
        title=f"dry run: {m.name} {m.version} (sequence {m.sequence}, arena {m.arena_bytes} B)"
    )
    cols = ("node", "transport", "target", "slot fit", "arena fit", "bytes", "zlib -9", "est. s")
    for col in (*cols, "verdict"):
        table.add_column(col)

    def fit(ok: bool, used: int, room: int) -> str:
        return f"[{'green' if ok else 'red'}]{'yes' if ok else 'NO'}[/] {used}/{room}"

    for r in rows:
        table.add_row(
            r.node_id,
            r.transport,
            r.target + ("" if r.budget_from == "node" else " (declared)"),
            fit(r.fits_slot, r.model_bytes, r.slot_bytes),
            fit(r.fits_arena, r.arena_bytes, r.ram_bytes),
            str(r.model_bytes),
            str(r.compressed_bytes),
            f"{r.estimated_s:.1f}",
            _outcome_text(r.verdict) if r.verdict in _OUTCOME_STYLE else f"[red]{r.verdict}[/]",
        )
    console.print(table)
    for r in rows:  # the path each MCUmgr node's capabilities chose
        if r.path:
            console.print(f"{r.node_id}: {r.path}", highlight=False)
    console.print(
        "zlib -9 size is informational: the transfers send the model uncompressed. Estimates "
        "use nominal rates (serial: baud/10 × 0.9; smp-serial: baud/10 × 0.65; smp-ble: "
        "10 kB/s; mqtt: 50 kB/s).",
        highlight=False,
    )


def node_info_dict(node_info: NodeInfo, transport: str) -> dict[str, object]:
    return {
        "node_id": node_info.node_id,
        "path": node_info.path,  # how flash-model reaches this node's model
        "transport": transport,
        "target": node_info.target,
        "slot_bytes": node_info.slot_bytes,
        "ram_bytes": node_info.ram_bytes,
        "slots": [
            {
                "slot": "AB"[s.slot],
                "model_id": s.model_id,
                "model_version": s.model_version,
                "model_hash": s.model_hash.hex(),
                "sequence": s.sequence,
                "active": s.active,
                "confirmed": s.confirmed,
            }
            for s in node_info.slots
        ],
    }


def render_node_info(console: Console, node_info: NodeInfo, address: str) -> None:
    from rich.table import Table

    table = Table(
        title=f"{node_info.node_id} at {address}: {node_info.target}, slot "
        f"{node_info.slot_bytes} B, arena RAM {node_info.ram_bytes} B"
    )
    for col in ("slot", "model", "version", "sequence", "hash", "active", "confirmed"):
        table.add_column(col)
    for s in sorted(node_info.slots, key=lambda s: s.slot):
        table.add_row(
            "AB"[s.slot],
            s.model_id,
            s.model_version,
            str(s.sequence),
            s.model_hash.hex(),
            "[green]yes[/]" if s.active else "no",
            "yes" if s.confirmed else "[yellow]no (test mode)[/]" if s.active else "no",
        )
    if not node_info.slots:
        table.add_row("-", "(no model)", "", "", "", "", "")
    console.print(table)
    if node_info.path:  # which path the node's capabilities chose
        console.print(f"path: {node_info.path}")
