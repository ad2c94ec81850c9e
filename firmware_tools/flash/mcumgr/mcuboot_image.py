"""A model wrapped as an MCUboot image with imgtool (MCUboot's own tool, from PyPI).

Stock img_mgmt refuses raw ``.tflite`` bytes (``INVALID_IMAGE_HEADER_MAGIC``): a slot holds
an MCUboot image, a 0x200-byte header, the payload and a TLV area. :func:`wrap` builds one:

- version ``<manifest version>+<sequence>`` (img_mgmt reports ``1.2.0.7``), so the node's
  image state says which model a slot holds and anti-rollback compares sequences;
- the security counter = the sequence (a protected TLV MCUboot can enforce);
- the signed manifest in a protected vendor TLV (:data:`MANIFEST_TLV`), for the node's
  application to verify as it does on the other paths;
- MCUboot's SHA256 TLV, and an Ed25519 signature with the fleet key (with its key hash TLV).

The image hash is what img_mgmt reports per slot: flash-model confirms an upload by it, not
by the model file's sha256. The image is marked non-bootable when it is a data image (a model
in its own image number, never executed).

Image 0 is the node's application: MCUboot boots whatever lands there, so a bare model must
never go there. With ``firmware`` (the application's binary, e.g. ``zephyr.bin``), the image is
a bundle: the application, zero padding to :data:`MODEL_ALIGN`, then the model; the protected
TLV :data:`MODEL_OFFSET_TLV` (u32, little endian) says where the model starts in the payload,
so the application finds it at ``slot start + header size + offset``.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import FlashError
from gateway.protocol.signed_manifest import SignedManifest

MANIFEST_TLV: Final = 0xA0F1  # vendor range 0xa000-0xfffe: our signed manifest (CBOR)
MODEL_OFFSET_TLV: Final = 0xA0F2  # vendor: the model's offset in a firmware bundle (u32 LE)
HEADER_SIZE: Final = 0x200  # MCUboot's default; Zephyr's CONFIG_ROM_START_OFFSET
MODEL_ALIGN: Final = 16  # the model in a bundle starts on this boundary


@dataclass(frozen=True, slots=True)
class McubootImage:
    data: bytes
    image_hash: bytes  # MCUboot's SHA256 TLV: what image state reports for the slot
    version: str  # as img_mgmt reports it: "1.2.0.7"
    model_offset: int = 0  # where the model starts in the payload (after the firmware)


def image_version(signed: SignedManifest) -> str:
    return f"{signed.manifest.version}.{signed.manifest.sequence}"


def wrap(
    artifact: bytes,
    signed: SignedManifest,
    key: Ed25519PrivateKey | None,
    *,
    non_bootable: bool = True,
    firmware: bytes | None = None,
) -> McubootImage:
    """The model as an MCUboot image; signed when ``key`` (the fleet key) is given.

    With ``firmware``, a bootable bundle: the application, then the model (see above).
    """
    from imgtool import image as imgimage
    from imgtool import version as imgversion
    from imgtool.keys.ed25519 import Ed25519

    m = signed.manifest
    try:
        version = imgversion.decode_version(f"{m.version}+{m.sequence}")
    except ValueError as exc:
        raise FlashError(f"model version {m.version} does not fit an MCUboot version") from exc
    tlvs = {MANIFEST_TLV: signed.to_cbor()}
    offset = 0
    if firmware is not None:
        offset = -(-len(firmware) // MODEL_ALIGN) * MODEL_ALIGN
        artifact = firmware.ljust(offset, b"\0") + artifact
        tlvs[MODEL_OFFSET_TLV] = offset.to_bytes(4, "little")
        non_bootable = False
    image = imgimage.Image(
        version=version,
        header_size=HEADER_SIZE,
        pad_header=True,
        security_counter=m.sequence,
        non_bootable=non_bootable,
    )
    with tempfile.TemporaryDirectory(prefix="fieldgate-img-") as tmp:
        raw, out = Path(tmp) / "model.bin", Path(tmp) / "model.signed.bin"
        raw.write_bytes(artifact)
        # imgtool prints progress ("sign the digest") to stdout; it is not ours to show.
        with contextlib.redirect_stdout(io.StringIO()):
            image.load(str(raw))
            image.create(
                None if key is None else Ed25519(key),
                "hash",
                None,
                custom_tlvs=tlvs,
            )
            image.save(str(out))
        data = out.read_bytes()
    if image.image_hash is None:  # imgtool sets it in create(); a guard, not a case
        raise FlashError("imgtool produced no image hash")
    return McubootImage(data, bytes(image.image_hash), image_version(signed), offset)
