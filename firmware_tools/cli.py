"""``flash-model``: convert, sign, verify and inspect TinyML models for fieldgate nodes.

A Typer app named ``app``; each command is a thin shell over the Python API in
:mod:`firmware_tools.convert`, :mod:`firmware_tools.manifest` and :mod:`firmware_tools.signing`.
Expected failures (:class:`~gateway.errors.FieldgateError`) print one red line saying what to
fix and exit with status 1; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Self

import typer
from rich.console import Console

from firmware_tools.manifest import DEFAULT_TARGET, TARGET_CLASSES, build_manifest
from gateway.errors import ConfigError, FieldgateError, ModelError

if TYPE_CHECKING:
    from firmware_tools.flash.api import FlashResult, NodeInfo
    from firmware_tools.flash.factory import LinkOptions
    from firmware_tools.flash.inventory import FleetDefaults, NodeEntry
    from firmware_tools.flash.orchestrate import DryRunRow, FlashOptions
    from firmware_tools.manifest import ModelManifest
    from firmware_tools.signing import SignedManifest

_LOGGER = logging.getLogger(__name__)

app = typer.Typer(
    name="flash-model",
    help=(
        "Build, sign and check int8 TinyML models for fieldgate sensor nodes.\n\n"
        "Typical flow: `flash-model keygen --out keys/` once; then per model "
        "`flash-model convert model.keras --representative rep.npy --out build/`, "
        "`flash-model sign build/model.tflite --key keys/model-signing.key --version 1.2.0`, "
        "and on the gateway `flash-model verify build/model.tflite --pubkey model-signing.pub`. "
        "Then `flash-model flash build/model.tflite --fleet inventory.toml` pushes it to the "
        "nodes (`--dry-run` first to see what would happen); `flash-model info NODE` shows a "
        "node's model slots and `flash-model rollback NODE` returns it to its previous model."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Markdown reflows docstring paragraphs to the terminal width.
    rich_markup_mode="markdown",
)


def _console() -> Console:
    # Bound to the stdout of the moment: conversion swaps sys.stdout to hush Keras' prints.
    return Console(file=sys.stdout, soft_wrap=True)


def _fail(console: Console, exc: FieldgateError) -> typer.Exit:
    console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


@app.command()
def convert(
    model: Annotated[
        Path, typer.Argument(help="Keras model file (.keras/.h5) or SavedModel directory.")
    ],
    *,
    representative: Annotated[
        Path,
        typer.Option(
            "--representative",
            "-r",
            help="Representative inputs (.npy, samples on axis 0) that set the int8 scales. "
            "Use real sensor windows covering the full operating range.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("build"),
    name: Annotated[
        str | None, typer.Option(help="Artifact base name (default: model file stem).")
    ] = None,
    eval_inputs: Annotated[
        Path | None,
        typer.Option(help="Evaluation inputs (.npy) for the float vs int8 comparison."),
    ] = None,
    eval_labels: Annotated[
        Path | None,
        typer.Option(help="Evaluation labels (.npy): int class ids (accuracy) or float targets."),
    ] = None,
    eval_name: Annotated[
        str | None, typer.Option(help="Name of the evaluation set in the report.")
    ] = None,
    metric: Annotated[
        str,
        typer.Option(
            help="auto | accuracy | reconstruction | mse. auto: accuracy with int labels, "
            "mse with float labels, reconstruction error without labels (autoencoders)."
        ),
    ] = "auto",
    max_metric_drop: Annotated[
        float | None,
        typer.Option(
            help="Fail if int8 is worse than float by more than this: absolute for accuracy "
            "(0.02 = 2 points), relative error increase for reconstruction/mse (0.25 = 25%). "
            "Default: 0.02 for accuracy, 0.25 otherwise."
        ),
    ] = None,
    target: Annotated[
        str, typer.Option(help=f"Target class: {', '.join(sorted(TARGET_CLASSES))}.")
    ] = DEFAULT_TARGET,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON instead of tables.")
    ] = False,
) -> None:
    """Convert a Keras/SavedModel model to a checked full-int8 TFLite model.

    Writes NAME.tflite, NAME.report.json, and a C export (NAME_model_data.cc/.h with an
    alignas(16) array, NAME_op_resolver.h with a MicroMutableOpResolver of exactly the ops
    used). The model is loaded and invoked in TFLite Micro (an op TFLM lacks fails the
    conversion, naming the op), its arena is measured, and with --eval-inputs the int8 model
    must stay within --max-metric-drop of the float model.
    """
    from firmware_tools.convert import (
        EvalSet,
        MetricGateError,
        convert_model,
        load_representative,
        save_conversion,
    )

    console = _console()
    stem = name or model.stem
    try:
        rep = load_representative(representative)
        eval_set = (
            EvalSet.from_files(eval_inputs, eval_labels, eval_name)
            if eval_inputs is not None
            else None
        )
        with console.status("Converting", spinner="dots") as status:
            result = convert_model(
                model,
                rep,
                eval_set=eval_set,
                metric=metric,
                max_metric_drop=max_metric_drop,
                target=target,
                progress=status.update,
            )
            status.update("Writing artifacts")
            paths = save_conversion(result, out, stem)
    except MetricGateError as exc:
        if not json_out:
            exc.report.render(console)
        raise _fail(console, exc) from exc
    except FieldgateError as exc:
        raise _fail(console, exc) from exc
    if json_out:
        console.print_json(result.report.to_json())
        return
    result.report.render(console)
    console.print("Wrote:")
    for path in paths.values():
        console.print(f"  {path}", highlight=False)


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the key pair.")],
    force: Annotated[bool, typer.Option(help="Replace an existing key pair.")] = False,
) -> None:
    """Create an Ed25519 key pair for signing model manifests.

    Writes model-signing.key (private, mode 0600; keep it on the build machine only) and
    model-signing.pub (public; install it on gateways and bake it into node firmware).
    """
    from firmware_tools.signing import generate_keypair

    console = _console()
    try:
        priv, pub = generate_keypair(out, force=force)
    except FieldgateError as exc:
        raise _fail(console, exc) from exc
    console.print(f"private key: {priv} (mode 0600, never copy it to a gateway)", highlight=False)
    console.print(f"public key:  {pub}", highlight=False)


@app.command()
def sign(
    model: Annotated[Path, typer.Argument(help="The .tflite artifact to sign.")],
    *,
    key: Annotated[Path, typer.Option("--key", "-k", help="Private key from `keygen`.")],
    version: Annotated[str, typer.Option(help="Semantic version, e.g. 1.2.0.")],
    sequence: Annotated[
        int | None,
        typer.Option(
            help="Monotonic sequence number; nodes refuse a sequence not above the one they "
            "run. Default: the existing manifest's sequence + 1, else 1."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name (default: file stem).")] = None,
    target: Annotated[
        str, typer.Option(help=f"Target class: {', '.join(sorted(TARGET_CLASSES))}.")
    ] = DEFAULT_TARGET,
    arena_bytes: Annotated[
        int | None,
        typer.Option(help="Tensor arena bytes (default: measured by loading it in TFLM)."),
    ] = None,
) -> None:
    """Write a signed manifest (MODEL.manifest.cbor and .json) for a .tflite artifact.

    The manifest records the artifact's sha256 and size, I/O quantisation, ops, arena bytes,
    target class, version and sequence; the Ed25519 signature covers its canonical CBOR.
    """
    from firmware_tools.signing import (
        find_signed,
        load_private_key,
        read_signed,
        sign_manifest,
        write_signed,
    )

    console = _console()
    try:
        private_key = load_private_key(key)
        artifact = _read_artifact(model)
        if sequence is None:
            existing = find_signed(model)
            sequence = read_signed(existing).manifest.sequence + 1 if existing else 1
        manifest = build_manifest(
            artifact,
            name=name or model.stem,
            version=version,
            sequence=sequence,
            target=target,
            arena_bytes=arena_bytes,
        )
        signed = sign_manifest(manifest, private_key)
        paths = write_signed(signed, model)
    except FieldgateError as exc:
        raise _fail(console, exc) from exc
    console.print(
        f"signed {manifest.name} {manifest.version} (sequence {manifest.sequence}, "
        f"sha256 {manifest.sha256[:16]}..., key {signed.key_id.hex()})",
        highlight=False,
    )
    for path in paths:
        console.print(f"  {path}", highlight=False)


@app.command()
def verify(
    model: Annotated[Path, typer.Argument(help="The .tflite artifact.")],
    pubkey: Annotated[Path, typer.Option("--pubkey", "-p", help="Public key from `keygen`.")],
    manifest: Annotated[
        Path | None,
        typer.Option(help="Signed manifest (default: MODEL.manifest.cbor, else .json)."),
    ] = None,
) -> None:
    """Check a model's signed manifest: the signature, then the artifact's size and sha256.

    Needs only the public key. Exits 0 when everything matches, 1 saying what failed.
    """
    from firmware_tools.signing import find_signed, load_public_key, read_signed, verify_signed

    console = _console()
    try:
        manifest_path = manifest or find_signed(model)
        if manifest_path is None:
            raise ModelError(
                f"no signed manifest next to {model}; sign it with `flash-model sign` "
                "or pass --manifest"
            )
        verified = verify_signed(
            read_signed(manifest_path), _read_artifact(model), load_public_key(pubkey)
        )
    except FieldgateError as exc:
        raise _fail(console, exc) from exc
    console.print(
        f"[green]OK[/green] {verified.name} {verified.version} sequence {verified.sequence} "
        f"target {verified.target}, {verified.size_bytes} bytes, sha256 {verified.sha256}",
        highlight=False,
    )


@app.command("info-model")
def info_model(
    model: Annotated[Path, typer.Argument(help="A .tflite file.")],
    target: Annotated[str, typer.Option(help="Target class to check the budget against.")] = (
        DEFAULT_TARGET
    ),
    tflm: Annotated[
        bool, typer.Option(help="Load and invoke it in TFLite Micro and measure the arena.")
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Inspect a .tflite model: size, ops, I/O quantisation, cost, TFLM fit, arena.

    Ops are listed with their versions; the model is loaded and invoked in TFLite Micro (use
    --no-tflm to skip) and a signed manifest next to it is shown (not verified: use `verify`).
    """
    from firmware_tools.report import ConversionReport, TflmSummary, analyse_tflite
    from firmware_tools.signing import find_signed, read_signed
    from firmware_tools.tflm_check import UnsupportedOpError, check_tflm

    console = _console()
    try:
        artifact = _read_artifact(model)
        report = ConversionReport(
            source=str(model), analysis=analyse_tflite(artifact), target=target
        )
        if tflm:
            try:
                result = check_tflm(artifact)
            except UnsupportedOpError as exc:
                if not json_out:
                    report.render(console)
                raise _fail(console, exc) from exc
            report.tflm = TflmSummary(
                loaded=True,
                arena_bytes=result.arena_bytes,
                arena_recorded_bytes=result.arena_recorded_bytes,
                arena_min_bytes=result.arena_min_bytes,
                max_lsb_vs_litert=None,
            )
        signed_path = find_signed(model)
        signed = read_signed(signed_path) if signed_path else None
    except FieldgateError as exc:
        raise _fail(console, exc) from exc
    from firmware_tools.model_quality import build_quality, quality_line  # issue 16

    if json_out:
        doc = report.to_dict()
        doc["manifest"] = signed.manifest.to_dict() if signed else None
        doc["build_quality"] = build_quality(model)
        console.print_json(json.dumps(doc))
        return
    report.render(console)
    if (line := quality_line(model)) is not None:
        console.print(line, highlight=False)
    if signed is not None:
        m = signed.manifest
        console.print(
            f"manifest ({signed_path}, unverified): {m.name} {m.version} sequence {m.sequence}, "
            f"key {signed.key_id.hex()}",
            highlight=False,
        )


# -- flashing nodes -------------------------------------------------------------------------

_EXIT_NODES_FAILED = 3

_TO_HELP = (
    "A node to flash (repeatable): serial:PORT[=ID], smp-serial:PORT[=ID], "
    "smp-ble:NAME_OR_ADDRESS[=ID], or mqtt://HOST[:PORT]/SITE/ID. With --fleet, a plain node id "
    "picks that node from the inventory."
)
_FLEET_HELP = "Fleet inventory TOML: [defaults] and one [[node]] table per node (see docs)."


@app.command()
def flash(
    model: Annotated[Path, typer.Argument(help="The signed .tflite artifact.")],
    *,
    to: Annotated[list[str] | None, typer.Option("--to", "-t", help=_TO_HELP)] = None,
    fleet: Annotated[Path | None, typer.Option("--fleet", "-f", help=_FLEET_HELP)] = None,
    parallel: Annotated[
        int | None,
        typer.Option(min=1, help="Nodes flashed at once (default: inventory, else 4)."),
    ] = None,
    retries: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Further attempts per node after a transport failure; each resumes from the "
            "node's offset (default: inventory, else 3).",
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write the JSON report (one object per node) here.")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Send nothing: per node, whether the model fits its slot and arena, the "
            "compressed size and the estimated time.",
        ),
    ] = False,
    pubkey: Annotated[
        Path | None,
        typer.Option(
            "--pubkey",
            "-p",
            help="Fleet public key: verify the signature here before sending anything "
            "(default: inventory's pubkey). Nodes verify it again themselves.",
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(help="Signed manifest (default: MODEL.manifest.cbor, else .json)."),
    ] = None,
    baud: Annotated[
        int | None, typer.Option(help="Serial baud rate (default: inventory, else 115200).")
    ] = None,
    ble_hci: Annotated[
        str | None,
        typer.Option(help="Bluetooth controller for smp-ble nodes, a Bumble HCI spec: usb:0."),
    ] = None,
    activate_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait for a node's self-test verdict (default 60)."),
    ] = None,
) -> None:
    """Flash a signed model onto nodes, in parallel, with retries that resume.

    Per node: read its slots, check the model can go there (target class, sequence above the
    running one, fits the slot and the arena), upload it into the inactive slot, then boot it
    in test mode; the node confirms it after its self-test or goes back to its old model. A
    progress bar per node, then a table and (--report) a JSON report.

    Exit status: 0 every node runs the model (flashed or already current); 1 nothing was sent
    (bad option, inventory, model or signature); 3 at least one node did not take the model
    (the table and report say which and why; running again resumes).
    """
    console = _console()
    try:
        nodes, defaults = _resolve_nodes(to, fleet)
        artifact, signed = _load_signed_model(model, manifest, pubkey or defaults.pubkey, console)
    except FieldgateError as exc:
        raise _fail(console, exc) from exc
    from firmware_tools.flash.factory import LinkOptions
    from firmware_tools.flash.orchestrate import FlashOptions

    links = LinkOptions(baud=baud or defaults.baud, ble_hci=ble_hci or defaults.ble_hci)
    options = FlashOptions(
        retries=defaults.retries if retries is None else retries,
        parallel=parallel or defaults.parallel,
        activate_timeout_s=activate_timeout or defaults.activate_timeout_s,
    )
    try:
        ok = asyncio.run(
            _flash_async(
                nodes,
                artifact,
                signed,
                links=links,
                options=options,
                dry_run=dry_run,
                report=report,
                console=console,
            )
        )
    except FieldgateError as exc:
        raise _fail(console, exc) from exc
    if not ok:
        raise typer.Exit(code=_EXIT_NODES_FAILED)


@app.command()
def info(
    node: Annotated[str, typer.Argument(help="Node spec, or a node id with --fleet.")],
    fleet: Annotated[Path | None, typer.Option("--fleet", "-f", help=_FLEET_HELP)] = None,
    baud: Annotated[int | None, typer.Option(help="Serial baud rate.")] = None,
    ble_hci: Annotated[str | None, typer.Option(help="Bumble HCI spec for smp-ble.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a node's model slots: model, version, sequence, hash, active, confirmed.

    An active slot that is not confirmed is running in test mode: the node reverts to the other
    slot unless its self-test passes.
    """
    from firmware_tools.flash.factory import FlasherFactory, LinkOptions

    console = _console()
    try:
        [entry], defaults = _resolve_nodes([node], fleet)
        links = LinkOptions(baud=baud or defaults.baud, ble_hci=ble_hci or defaults.ble_hci)

        async def run() -> NodeInfo:
            async with FlasherFactory(links) as factory:
                return await factory.create(entry).info()

        node_info = asyncio.run(run())
    except FieldgateError as exc:
        raise _fail(console, exc) from exc
    if json_out:
        console.print_json(json.dumps(_node_info_dict(node_info, entry.transport)))
        return
    _render_node_info(console, node_info, entry.describe())


@app.command()
def rollback(
    node: Annotated[str, typer.Argument(help="Node spec, or a node id with --fleet.")],
    fleet: Annotated[Path | None, typer.Option("--fleet", "-f", help=_FLEET_HELP)] = None,
    baud: Annotated[int | None, typer.Option(help="Serial baud rate.")] = None,
    ble_hci: Annotated[str | None, typer.Option(help="Bumble HCI spec for smp-ble.")] = None,
) -> None:
    """Make a node run its other (previous, confirmed) model slot again.

    The node refuses when the other slot is empty or was never confirmed; `flash-model info`
    shows both slots.
    """
    from firmware_tools.flash.factory import FlasherFactory, LinkOptions

    console = _console()
    try:
        [entry], defaults = _resolve_nodes([node], fleet)
        links = LinkOptions(baud=baud or defaults.baud, ble_hci=ble_hci or defaults.ble_hci)

        async def run() -> tuple[NodeInfo, NodeInfo]:
            async with FlasherFactory(links) as factory:
                flasher = factory.create(entry)
                before = await flasher.info()
                return before, await flasher.rollback()

        before, after = asyncio.run(run())
    except FieldgateError as exc:
        raise _fail(console, exc) from exc
    old = before.active.model_version if before.active else "nothing"
    new = after.active.model_version if after.active else "nothing"
    console.print(f"{after.node_id}: rolled back {old} → {new}", highlight=False)
    _render_node_info(console, after, entry.describe())


def _resolve_nodes(
    to: list[str] | None, fleet: Path | None
) -> tuple[list[NodeEntry], FleetDefaults]:
    from firmware_tools.flash.inventory import (
        FleetDefaults,
        check_unique,
        load_inventory,
        parse_node_spec,
    )

    inventory = load_inventory(fleet) if fleet is not None else None
    defaults = inventory.defaults if inventory else FleetDefaults()
    if not to:
        if inventory is None:
            raise ConfigError("--to", "name the nodes with --to NODE... or --fleet inventory.toml")
        return list(inventory.nodes), defaults
    nodes = []
    for spec in to:
        if inventory is not None and ":" not in spec:
            entry = inventory.find(spec)
            if entry is None:
                raise ConfigError(
                    f"--to {spec}",
                    f"no node {spec!r} in {fleet}; its nodes are "
                    f"{', '.join(n.node_id for n in inventory.nodes)}",
                )
            nodes.append(entry)
        else:
            nodes.append(parse_node_spec(spec))
    check_unique(nodes)
    return nodes, defaults


def _load_signed_model(
    model: Path, manifest: Path | None, pubkey: Path | None, console: Console
) -> tuple[bytes, SignedManifest]:
    from firmware_tools.manifest import sha256_hex
    from firmware_tools.signing import find_signed, load_public_key, read_signed, verify_signed

    artifact = _read_artifact(model)
    manifest_path = manifest or find_signed(model)
    if manifest_path is None:
        raise ModelError(
            f"no signed manifest next to {model}; nodes refuse unsigned models: sign it with "
            "`flash-model sign` or pass --manifest"
        )
    signed = read_signed(manifest_path)
    if pubkey is not None:
        verify_signed(signed, artifact, load_public_key(pubkey))
        return artifact, signed
    m = signed.manifest
    if len(artifact) != m.size_bytes or sha256_hex(artifact) != m.sha256:
        raise ModelError(
            f"{model} is not the artifact {manifest_path} describes (size or sha256 differ); "
            "every node would refuse it: re-sign it or pass the right --manifest"
        )
    console.print(
        "[yellow]note:[/yellow] signature not checked here (no --pubkey); nodes check it",
        highlight=False,
    )
    return artifact, signed


async def _flash_async(
    nodes: list[NodeEntry],
    artifact: bytes,
    signed: SignedManifest,
    *,
    links: LinkOptions,
    options: FlashOptions,
    dry_run: bool,
    report: Path | None,
    console: Console,
) -> bool:
    from firmware_tools.flash import orchestrate
    from firmware_tools.flash.factory import FlasherFactory

    m = signed.manifest
    expected = {n.node_id: n.target for n in nodes if n.target is not None}
    async with FlasherFactory(links) as factory:
        flashers = [factory.create(n) for n in nodes]
        if dry_run:
            rows = await orchestrate.dry_run(
                flashers,
                artifact,
                signed,
                baud=links.baud,
                parallel=options.parallel,
                expected_targets=expected,
            )
            _render_dry_run(console, rows, m)
            if report is not None:
                _write_report(report, json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
            return all(r.verdict in ("would flash", "already current") for r in rows)
        console.print(
            f"flashing {m.name} {m.version} (sequence {m.sequence}, {len(artifact)} bytes) to "
            f"{len(flashers)} node{'s' if len(flashers) != 1 else ''}, up to {options.parallel} at a time",
            highlight=False,
        )
        with _ProgressObserver(console, {f.node_id: f.transport for f in flashers}) as observer:
            results = await orchestrate.flash_fleet(
                flashers,
                artifact,
                signed,
                options=options,
                observer=observer,
                expected_targets=expected,
            )
    _render_results(console, results)
    if report is not None:
        _write_report(report, orchestrate.report_json(results))
    return orchestrate.all_ok(results)


def _write_report(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError("--report", f"cannot write {path}: {exc}") from exc


class _ProgressObserver:
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


def _render_results(console: Console, results: list[FlashResult]) -> None:
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


def _render_dry_run(console: Console, rows: list[DryRunRow], m: ModelManifest) -> None:
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
    console.print(
        "zlib -9 size is informational: the transfers send the model uncompressed. Estimates "
        "use nominal rates (serial: baud/10 × 0.9; smp-serial: baud/10 × 0.65; smp-ble: "
        "10 kB/s; mqtt: 50 kB/s).",
        highlight=False,
    )


def _node_info_dict(node_info: NodeInfo, transport: str) -> dict[str, object]:
    return {
        "node_id": node_info.node_id,
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


def _render_node_info(console: Console, node_info: NodeInfo, address: str) -> None:
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


def _read_artifact(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc}") from exc


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # smpclient logs each timeout and disconnect it raises; our flashers turn those into
    # per-node results and retries, so its own lines would only repeat them out of context.
    logging.getLogger("smpclient").setLevel(logging.CRITICAL)
    app()
