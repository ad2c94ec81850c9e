"""``flash-model`` commands on nodes: flash, info, rollback, with one set of link options."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from firmware_tools.cli.common import console_for_output, fail, read_artifact
from firmware_tools.cli.fleet_view import (
    ProgressObserver,
    node_info_dict,
    render_dry_run,
    render_node_info,
    render_results,
)
from gateway.errors import ConfigError, FieldgateError, ModelError

if TYPE_CHECKING:
    from firmware_tools.flash.factory import LinkOptions
    from firmware_tools.flash.inventory import FleetDefaults, NodeEntry
    from firmware_tools.flash.orchestrate import FlashOptions
    from gateway.protocol.signed_manifest import SignedManifest
    from gateway.protocol.slots import NodeInfo

# -- flashing nodes -------------------------------------------------------------------------

_EXIT_NODES_FAILED = 3

_TO_HELP = (
    "A node to flash (repeatable): serial:PORT[=ID], smp-serial:PORT[=ID], "
    "smp-ble:NAME_OR_ADDRESS[=ID], or mqtt://HOST[:PORT]/SITE/ID. With --fleet, a plain node id "
    "picks that node from the inventory."
)

# The link options of every fleet command, declared once.
FleetOption = Annotated[
    Path | None,
    typer.Option(
        "--fleet",
        "-f",
        help="Fleet inventory TOML: [defaults] and one [[node]] table per node (see docs).",
    ),
]
BaudOption = Annotated[
    int | None, typer.Option(help="Serial baud rate (default: inventory, else 115200).")
]
BleHciOption = Annotated[
    str | None,
    typer.Option(
        help="Bluetooth controller for smp-ble nodes, a Bumble HCI spec such as usb:0 "
        "(default: inventory)."
    ),
]


def _links(baud: int | None, ble_hci: str | None, defaults: FleetDefaults) -> LinkOptions:
    """The link options given on the command line, else the inventory's defaults."""
    from firmware_tools.flash.factory import LinkOptions

    return LinkOptions(baud=baud or defaults.baud, ble_hci=ble_hci or defaults.ble_hci)


def flash(
    model: Annotated[Path, typer.Argument(help="The signed .tflite artifact.")],
    *,
    to: Annotated[list[str] | None, typer.Option("--to", "-t", help=_TO_HELP)] = None,
    fleet: FleetOption = None,
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
    baud: BaudOption = None,
    ble_hci: BleHciOption = None,
    activate_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait for a node's self-test verdict (default 60)."),
    ] = None,
    image_key: Annotated[
        Path | None,
        typer.Option(
            help="Fleet private key: signs the MCUboot image built for stock image-path "
            "smp-serial nodes (their MCUboot checks it). Without it the image carries "
            "MCUboot's SHA256 only.",
        ),
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
    console = console_for_output()
    try:
        nodes, defaults = _resolve_nodes(to, fleet)
        artifact, signed = _load_signed_model(model, manifest, pubkey or defaults.pubkey, console)
    except FieldgateError as exc:
        raise fail(console, exc) from exc
    from firmware_tools.flash.orchestrate import FlashOptions
    from firmware_tools.signing import load_private_key

    try:  # the key that signs MCUboot images (stock image path)
        fleet_key = None if image_key is None else load_private_key(image_key)
    except FieldgateError as exc:
        raise fail(console, exc) from exc
    links = dataclasses.replace(_links(baud, ble_hci, defaults), fleet_key=fleet_key)
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
        raise fail(console, exc) from exc
    if not ok:
        raise typer.Exit(code=_EXIT_NODES_FAILED)


def info(
    node: Annotated[str, typer.Argument(help="Node spec, or a node id with --fleet.")],
    fleet: FleetOption = None,
    baud: BaudOption = None,
    ble_hci: BleHciOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a node's model slots: model, version, sequence, hash, active, confirmed.

    An active slot that is not confirmed is running in test mode: the node reverts to the other
    slot unless its self-test passes.
    """
    from firmware_tools.flash.factory import FlasherFactory

    console = console_for_output()
    try:
        [entry], defaults = _resolve_nodes([node], fleet)
        links = _links(baud, ble_hci, defaults)

        async def run() -> NodeInfo:
            async with FlasherFactory(links) as factory:
                return await factory.create(entry).info()

        node_info = asyncio.run(run())
    except FieldgateError as exc:
        raise fail(console, exc) from exc
    if json_out:
        console.print_json(json.dumps(node_info_dict(node_info, entry.transport)))
        return
    render_node_info(console, node_info, entry.describe())


def rollback(
    node: Annotated[str, typer.Argument(help="Node spec, or a node id with --fleet.")],
    fleet: FleetOption = None,
    baud: BaudOption = None,
    ble_hci: BleHciOption = None,
) -> None:
    """Make a node run its other (previous, confirmed) model slot again.

    The node refuses when the other slot is empty or was never confirmed; `flash-model info`
    shows both slots.
    """
    from firmware_tools.flash.factory import FlasherFactory

    console = console_for_output()
    try:
        [entry], defaults = _resolve_nodes([node], fleet)
        links = _links(baud, ble_hci, defaults)

        async def run() -> tuple[NodeInfo, NodeInfo]:
            async with FlasherFactory(links) as factory:
                flasher = factory.create(entry)
                before = await flasher.info()
                return before, await flasher.rollback()

        before, after = asyncio.run(run())
    except FieldgateError as exc:
        raise fail(console, exc) from exc
    old = before.active.model_version if before.active else "nothing"
    new = after.active.model_version if after.active else "nothing"
    console.print(f"{after.node_id}: rolled back {old} → {new}", highlight=False)
    render_node_info(console, after, entry.describe())


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
    from gateway.protocol.manifest import sha256_hex
    from gateway.protocol.signed_manifest import (
        find_signed,
        load_public_key,
        read_signed,
        verify_signed,
    )

    artifact = read_artifact(model)
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
            render_dry_run(console, rows, m)
            if report is not None:
                _write_report(report, json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
            return all(r.verdict in ("would flash", "already current") for r in rows)
        console.print(
            f"flashing {m.name} {m.version} (sequence {m.sequence}, {len(artifact)} bytes) to "
            f"{len(flashers)} node{'s' if len(flashers) != 1 else ''}, up to {options.parallel} at a time",
            highlight=False,
        )
        with ProgressObserver(console, {f.node_id: f.transport for f in flashers}) as observer:
            results = await orchestrate.flash_fleet(
                flashers,
                artifact,
                signed,
                options=options,
                observer=observer,
                expected_targets=expected,
            )
    render_results(console, results)
    if report is not None:
        _write_report(report, orchestrate.report_json(results))
    return orchestrate.all_ok(results)


def _write_report(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError("--report", f"cannot write {path}: {exc}") from exc
