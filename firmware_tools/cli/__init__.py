"""``flash-model``: convert, sign, verify and inspect TinyML models for fieldgate nodes.

A Typer app named ``app``; each command is a thin shell over the Python API in
:mod:`firmware_tools.convert`, :mod:`gateway.protocol.manifest` and :mod:`firmware_tools.signing`.
Expected failures (:class:`~gateway.errors.FieldgateError`) print one red line saying what to
fix and exit with status 1; anything else is a bug and shows its traceback.

One module per job: :mod:`.model` (convert, keygen, sign, verify, info-model), :mod:`.fleet`
(flash, info, rollback, sharing one set of link options), :mod:`.fleet_view` (progress and
tables) and :mod:`.common`.
"""

from __future__ import annotations

import logging

import typer

from firmware_tools.cli import fleet, model

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


app.command()(model.convert)
app.command()(model.keygen)
app.command()(model.sign)
app.command()(model.verify)
app.command("info-model")(model.info_model)
app.command()(fleet.flash)
app.command()(fleet.info)
app.command()(fleet.rollback)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # smpclient logs each timeout and disconnect it raises; our flashers turn those into
    # per-node results and retries, so its own lines would only repeat them out of context.
    logging.getLogger("smpclient").setLevel(logging.CRITICAL)
    app()
