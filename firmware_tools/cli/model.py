"""``flash-model`` commands on model files: convert, keygen, sign, verify, info-model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from firmware_tools.describe import build_manifest
from gateway.errors import FieldgateError, ModelError
from gateway.protocol.manifest import DEFAULT_TARGET, TARGET_CLASSES

if TYPE_CHECKING:
    pass

from firmware_tools.cli.common import console_for_output, fail, read_artifact


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

    console = console_for_output()
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
        raise fail(console, exc) from exc
    except FieldgateError as exc:
        raise fail(console, exc) from exc
    if json_out:
        console.print_json(result.report.to_json())
        return
    result.report.render(console)
    console.print("Wrote:")
    for path in paths.values():
        console.print(f"  {path}", highlight=False)


def keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the key pair.")],
    force: Annotated[bool, typer.Option(help="Replace an existing key pair.")] = False,
) -> None:
    """Create an Ed25519 key pair for signing model manifests.

    Writes model-signing.key (private, mode 0600; keep it on the build machine only) and
    model-signing.pub (public; install it on gateways and bake it into node firmware).
    """
    from firmware_tools.signing import generate_keypair

    console = console_for_output()
    try:
        priv, pub = generate_keypair(out, force=force)
    except FieldgateError as exc:
        raise fail(console, exc) from exc
    console.print(f"private key: {priv} (mode 0600, never copy it to a gateway)", highlight=False)
    console.print(f"public key:  {pub}", highlight=False)


def read_runtime(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read runtime settings {path}: {exc}") from exc


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
    family: Annotated[
        str | None,
        typer.Option(
            help="Anti-rollback family: models of one family share one sequence space whatever "
            "their name (default: the name)."
        ),
    ] = None,
    runtime: Annotated[
        Path | None,
        typer.Option(
            help="Runtime settings to cover by the signature (default: MODEL's .json beside it, "
            "if there is one; a gateway refuses a gateway model whose settings are not signed)."
        ),
    ] = None,
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
    target class, version, sequence, family and the sha256 of the runtime settings (MODEL's
    .json: thresholds, features); the Ed25519 signature covers its canonical CBOR.
    """
    from firmware_tools.signing import load_private_key, sign_manifest, write_signed
    from gateway.protocol.signed_manifest import find_signed, read_signed

    console = console_for_output()
    try:
        private_key = load_private_key(key)
        artifact = read_artifact(model)
        runtime_path = runtime or model.with_suffix(".json")
        runtime_bytes = read_runtime(runtime_path) if runtime or runtime_path.exists() else None
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
            family=family,
            runtime=runtime_bytes,
        )
        signed = sign_manifest(manifest, private_key)
        paths = write_signed(signed, model)
    except FieldgateError as exc:
        raise fail(console, exc) from exc
    console.print(
        f"signed {manifest.name} {manifest.version} (sequence {manifest.sequence}, "
        f"sha256 {manifest.sha256[:16]}..., key {signed.key_id.hex()})",
        highlight=False,
    )
    if manifest.runtime_sha256 is not None:
        console.print(
            f"runtime settings {runtime_path} covered (sha256 {manifest.runtime_sha256[:16]}...)",
            highlight=False,
        )
    for path in paths:
        console.print(f"  {path}", highlight=False)


def verify(
    model: Annotated[Path, typer.Argument(help="The .tflite artifact.")],
    pubkey: Annotated[Path, typer.Option("--pubkey", "-p", help="Public key from `keygen`.")],
    manifest: Annotated[
        Path | None,
        typer.Option(help="Signed manifest (default: MODEL.manifest.cbor, else .json)."),
    ] = None,
) -> None:
    """Check a model's signed manifest: the signature, the artifact's size and sha256, and the
    runtime settings (MODEL's .json) when the manifest covers them.

    Needs only the public key. Exits 0 when everything matches, 1 saying what failed.
    """
    from gateway.protocol.signed_manifest import (
        find_signed,
        load_public_key,
        read_signed,
        verify_runtime,
        verify_signed,
    )

    console = console_for_output()
    try:
        manifest_path = manifest or find_signed(model)
        if manifest_path is None:
            raise ModelError(
                f"no signed manifest next to {model}; sign it with `flash-model sign` "
                "or pass --manifest"
            )
        verified = verify_signed(
            read_signed(manifest_path), read_artifact(model), load_public_key(pubkey)
        )
        runtime_path = model.with_suffix(".json")
        if verified.runtime_sha256 is not None:
            verify_runtime(verified, read_runtime(runtime_path), str(runtime_path))
    except FieldgateError as exc:
        raise fail(console, exc) from exc
    console.print(
        f"[green]OK[/green] {verified.name} {verified.version} sequence {verified.sequence} "
        f"target {verified.target}, {verified.size_bytes} bytes, sha256 {verified.sha256}"
        + (", runtime settings covered" if verified.runtime_sha256 else ""),
        highlight=False,
    )


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
    from firmware_tools.tflm_check import UnsupportedOpError, check_tflm
    from gateway.protocol.signed_manifest import find_signed, read_signed

    console = console_for_output()
    try:
        artifact = read_artifact(model)
        report = ConversionReport(
            source=str(model), analysis=analyse_tflite(artifact), target=target
        )
        if tflm:
            try:
                result = check_tflm(artifact)
            except UnsupportedOpError as exc:
                if not json_out:
                    report.render(console)
                raise fail(console, exc) from exc
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
        raise fail(console, exc) from exc
    from firmware_tools.model_quality import build_quality, quality_line

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
