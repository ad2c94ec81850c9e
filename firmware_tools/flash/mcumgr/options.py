"""Per-node MCUmgr settings in the fleet inventory (``[[node]]`` keys of smp-serial nodes).

::

    [[node]]
    id = "pump-07"
    transport = "smp-serial"
    address = "/dev/ttyACM3"
    smp_kind = "fs"              # auto (default) | profile | fs | image
    model_dir = "/lfs1"          # fs nodes: an existing directory for model.tflite + manifest.cbor
    fs_activate = "reset"        # fs nodes: reset (default) | none
    image_number = 0             # image nodes: the MCUboot image the model lives in
    image_firmware = "app.bin"   # image 0 only: the node's application; the model rides after it

Imported by the inventory for every transport: it imports nothing of smp or serial.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.errors import ConfigError


class NodeKind(enum.StrEnum):
    PROFILE = "profile"  # our own node profile
    FS = "fs"  # stock fs group: model file + manifest in a directory
    IMAGE = "image"  # stock img group: MCUboot image slot
    AUTO = "auto"  # inventory default: decide from the capabilities


KEYS: Final = frozenset({"smp_kind", "model_dir", "fs_activate", "image_number", "image_firmware"})
DEFAULT_MODEL_DIR: Final = "/lfs1"
_DIR: Final = re.compile(r"^/[A-Za-z0-9._/-]{1,120}$")


@dataclass(frozen=True, slots=True)
class McuMgrOptions:
    kind: NodeKind = NodeKind.AUTO
    model_dir: str = DEFAULT_MODEL_DIR
    fs_activate: str = "reset"  # how the application picks up new files: "reset" | "none"
    image_number: int = 0
    # Image 0 is the node's application: the model goes there only appended to this binary.
    image_firmware: Path | None = None


def parse_options(raw: dict[str, Any], where: str, base: Path | None = None) -> McuMgrOptions:
    """The MCUmgr keys of one inventory node; errors name the key. ``base`` anchors a
    relative ``image_firmware`` (the inventory's directory)."""
    kind_text = raw.get("smp_kind", NodeKind.AUTO.value)
    try:
        kind = NodeKind(kind_text)
    except ValueError:
        raise ConfigError(
            f"{where}.smp_kind",
            f"{kind_text!r} is not one of {', '.join(k.value for k in NodeKind)}",
        ) from None
    model_dir = raw.get("model_dir", DEFAULT_MODEL_DIR)
    if not isinstance(model_dir, str) or not _DIR.match(model_dir) or ".." in model_dir:
        raise ConfigError(
            f"{where}.model_dir",
            f"must be an absolute node path like /lfs1/model, not {model_dir!r}",
        )
    activate = raw.get("fs_activate", "reset")
    if activate not in ("reset", "none"):
        raise ConfigError(f"{where}.fs_activate", f"must be reset or none, not {activate!r}")
    image = raw.get("image_number", 0)
    if isinstance(image, bool) or not isinstance(image, int) or not 0 <= image <= 15:
        raise ConfigError(f"{where}.image_number", f"must be an integer 0-15, not {image!r}")
    firmware = raw.get("image_firmware")
    firmware_path = None
    if firmware is not None:
        if not isinstance(firmware, str) or not firmware:
            raise ConfigError(f"{where}.image_firmware", "must be the path of a firmware binary")
        firmware_path = (base or Path()) / firmware
        if not firmware_path.is_file():
            raise ConfigError(f"{where}.image_firmware", f"no such file: {firmware_path}")
    return McuMgrOptions(kind, model_dir.rstrip("/") or "/", activate, image, firmware_path)
