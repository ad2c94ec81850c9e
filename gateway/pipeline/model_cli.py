"""``fieldgate model install|status``: hand a signed gateway model to the running gateway.

``install`` checks the model the way the gateway will (signature, runtime settings, the
anti-rollback floor), then puts it in ``<data_dir>/gateway-model/incoming/`` as one bundle
directory that appears at once (written under a dot-name, then renamed). The running gateway
swaps it in within ``scoring.model_inbox_poll_s`` (:mod:`gateway.pipeline.model_inbox`);
a stopped one at its next start.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gateway.config_cli import ConfigOption, load_or_exit
from gateway.errors import ModelError
from gateway.pipeline.model_inbox import bundle_files
from gateway.pipeline.model_state import ModelState, fsync_dir, model_dir_for

model_app = typer.Typer(
    help="Install a signed gateway model into the running gateway, or show what runs.",
    no_args_is_help=True,
)
_out = Console()
_err = Console(stderr=True)


def _model_of(files: list[Path]) -> Path:
    models = [f for f in files if f.suffix == ".tflite"]
    if len(models) != 1:
        raise ModelError(f"give exactly one .tflite (found {len(models)})")
    model = models[0]
    for needed in bundle_files(model)[:2]:
        if not needed.exists():
            raise ModelError(f"{needed} is missing: a gateway model travels with its .json")
    if not any(p.exists() for p in bundle_files(model)[2:]):
        raise ModelError(
            f"no signed manifest beside {model} ({model.stem}.manifest.cbor or .json); sign it "
            "with `flash-model sign`"
        )
    return model


def _precheck(model: Path, state: ModelState, public_key_path: Path | None) -> str:
    """Verify as the gateway will; a one-line description of the model."""
    from gateway.pipeline.hotswap import load_verified
    from gateway.protocol.signed_manifest import load_public_key

    if public_key_path is None:
        raise ModelError(
            "scoring.public_key_path is not set: the gateway refuses every new model; configure "
            "the public key that signs your models"
        )
    _, info = load_verified(model, load_public_key(public_key_path))
    state.check(info)
    return f"{info.name} {info.version} (family {info.family}, sequence {info.sequence})"


def place(model: Path, incoming: Path) -> Path:
    """Copy ``model``'s bundle into ``incoming`` so that it appears whole (one rename)."""
    incoming.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{model.stem}"
    tmp = incoming / f".install-{name}"
    tmp.mkdir()
    owner = incoming.stat()
    for src in bundle_files(model):
        if src.exists():
            dst = tmp / src.name
            shutil.copyfile(src, dst)
            with open(dst, "rb") as f:
                os.fsync(f.fileno())
    if os.geteuid() == 0:  # root installs for the service user, who must be able to move it
        for p in (tmp, *tmp.iterdir()):
            os.chown(p, owner.st_uid, owner.st_gid)
    target = incoming / name
    os.rename(tmp, target)
    fsync_dir(incoming)
    return target


@model_app.command()
def install(
    files: Annotated[
        list[Path],
        typer.Argument(help="The .tflite (its .json and .manifest.cbor/.json beside it)."),
    ],
    config: ConfigOption = None,
    check: Annotated[
        bool, typer.Option(help="Verify here first (signature, settings, floor).")
    ] = True,
) -> None:
    """Queue a signed gateway model for the running gateway (swapped in without a restart).

    Exit 1 with the reason when it would be refused: not signed by the site key, runtime
    settings (thresholds) changed after signing, or not newer than what the gateway has run.
    """
    cfg = load_or_exit(config)
    state = ModelState(model_dir_for(cfg.data_dir), repair=False)
    try:
        model = _model_of(files)
        what = _precheck(model, state, cfg.scoring.public_key_path) if check else model.name
        target = place(model, state.incoming)
    except (ModelError, OSError) as exc:
        _err.print(f"[red]refused[/red]: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    _out.print(f"queued {what} in {target}", highlight=False, soft_wrap=True)
    _out.print(
        f"the running gateway installs it within {cfg.scoring.model_inbox_poll_s:g} s "
        "(or at its next start); see `fieldgate model status`",
        highlight=False,
    )


@model_app.command()
def status(config: ConfigOption = None) -> None:
    """The installed model, the anti-rollback floors, models waiting and recent refusals."""
    cfg = load_or_exit(config)
    state = ModelState(model_dir_for(cfg.data_dir), repair=False)
    active = state.active_model()
    _out.print(f"active: {active or f'none (scoring.model_path {cfg.scoring.model_path})'}")
    for family, floor in sorted(state.floors().items()):
        _out.print(
            f"floor {family}: sequence {floor.sequence} ({floor.name} {floor.version})",
            highlight=False,
        )
    for problem in state.problems:
        _out.print(f"[yellow]problem[/yellow]: {problem}", highlight=False, soft_wrap=True)
    if state.incoming.is_dir():
        for entry in sorted(p for p in state.incoming.iterdir() if not p.name.startswith(".")):
            _out.print(f"waiting: {entry.name}", highlight=False)
    if state.rejected.is_dir():
        for bundle in sorted(state.rejected.iterdir())[-5:]:
            why = bundle / "REJECTED.txt"
            reason = why.read_text(encoding="utf-8").strip() if why.exists() else "?"
            _out.print(f"rejected {bundle.name}: {reason}", highlight=False, soft_wrap=True)
