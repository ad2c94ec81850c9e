"""Sign the shipped gateway model (artifact and runtime settings) for the package.

Run after the artifacts in ``tinymodels/artifacts`` change (``tinymodels.train_gateway``)::

    python -m firmware_tools.package_signing            # a fresh key, thrown away after
    python -m firmware_tools.package_signing --key K    # a release key kept elsewhere

It writes ``gateway_model.manifest.cbor``/``.json`` (family ``gateway_model``, sequence one
above the previous manifest's, ``runtime_sha256`` over ``gateway_model.json``) and the public
key ``package-signing.pub`` beside them. The gateway verifies the shipped model against that
key at start-up, so an edited threshold in the shipped settings is refused.

Without ``--key`` the key pair is made for this run and its private half is never written:
nobody can sign anything else with it. That proves the package's integrity, not who built it
(anyone can build a package); a site's own models are signed with the site's key
(``flash-model sign``) and verified with ``scoring.public_key_path``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.describe import build_manifest
from firmware_tools.signing import load_private_key, sign_manifest, write_signed
from gateway.errors import FieldgateError
from gateway.protocol.signed_manifest import find_signed, read_signed
from tinymodels.runtime import DEFAULT_GATEWAY_MODEL

FAMILY = "gateway_model"
PUBLIC_KEY_NAME = "package-signing.pub"


def sign_package(model: Path = DEFAULT_GATEWAY_MODEL, key: Ed25519PrivateKey | None = None) -> str:
    """Sign ``model`` and its ``.json`` settings; write the public key beside it. Returns a
    one-line summary."""
    private = key or Ed25519PrivateKey.generate()
    artifact = model.read_bytes()
    runtime = model.with_suffix(".json").read_bytes()
    version = str(json.loads(runtime).get("version", "0.0.0"))
    existing = find_signed(model)
    sequence = read_signed(existing).manifest.sequence + 1 if existing else 1
    manifest = build_manifest(
        artifact,
        name=model.stem,
        version=version,
        sequence=sequence,
        arena_bytes=0,  # a gateway model runs in LiteRT, not in a node's TFLM arena
        family=FAMILY,
        runtime=runtime,
    )
    signed = sign_manifest(manifest, private)
    write_signed(signed, model)
    model.with_name(PUBLIC_KEY_NAME).write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return (
        f"signed {model.name} {version} (family {FAMILY}, sequence {sequence}, key "
        f"{signed.key_id.hex()}, runtime settings sha256 {manifest.runtime_sha256})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_GATEWAY_MODEL)
    parser.add_argument("--key", type=Path, help="a kept Ed25519 private key (PEM, mode 0600)")
    args = parser.parse_args(argv)
    try:
        key = load_private_key(args.key) if args.key else None
        print(sign_package(args.model, key))
    except (FieldgateError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
