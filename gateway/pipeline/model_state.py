"""The gateway model's persistent state: anti-rollback floors and the installed model.

Everything lives in ``<data_dir>/gateway-model/``:

* ``state.json``: per model family, the highest manifest ``sequence`` this gateway has run
  (the *floor*), and which installed bundle is active. One file, replaced atomically
  (write, fsync, rename, fsync the directory), so the floor and the active model move
  together: a crash leaves the old pair or the new pair, never a mix.
* ``incoming/``: the watched directory (:mod:`gateway.pipeline.model_inbox`).
* ``installed/<bundle>/``: accepted models (the active one and the one before it).
* ``rejected/<bundle>/``: refused ones, with ``REJECTED.txt`` saying why (newest kept).

Floors apply to models verified with the site's key (``ModelInfo.signed``); the family is the
signed manifest's ``family``, else its ``name`` (so renaming a model inside a family does not
reset its floor). A model below its family's floor is refused at start-up and as a
replacement. The floor is as trustworthy as the data directory: whoever can write it can
also delete it (docs/security.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import ModelError
from gateway.pipeline.hotswap import ModelInfo, load_startup, load_verified
from gateway.protocol.signed_manifest import load_public_key, manifest_paths
from tinymodels.runtime import GatewayModel

_T = TypeVar("_T")

_LOGGER = logging.getLogger(__name__)

STATE_FORMAT = 1
KEEP_REJECTED = 20  # rejected bundles kept for a post-mortem; older ones are deleted
KEEP_INSTALLED = 3  # besides the active bundle: earlier ones (and staged shadow models)


def model_dir_for(data_dir: Path) -> Path:
    return data_dir / "gateway-model"


@dataclass(frozen=True, slots=True)
class Floor:
    """The newest model of a family this gateway has run."""

    sequence: int
    name: str
    version: str
    sha256: str


class ModelState:
    """Floors and the active installed bundle, in ``root/state.json``."""

    def __init__(self, root: Path, *, repair: bool = True) -> None:
        """``repair``: move a damaged ``state.json`` aside (the gateway); False only reports
        it in ``problems`` (the command line, beside a running gateway)."""
        self.root = root
        self._repair = repair
        self.incoming = root / "incoming"
        self.installed = root / "installed"
        self.rejected = root / "rejected"
        self.path = root / "state.json"
        self.problems: list[str] = []  # found at open; the inbox raises them as an alert
        self._floors: dict[str, Floor] = {}
        self._active: str | None = None
        self._load()

    # -- reading -------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ModelError(f"cannot read the model state {self.path}: {exc}") from exc
        try:
            doc = json.loads(raw)
            if doc.get("format") != STATE_FORMAT:
                raise ValueError(f"format {doc.get('format')!r} is not {STATE_FORMAT}")
            floors = {str(k): _floor(v) for k, v in doc["floors"].items()}
            active = doc.get("active")
            if active is not None and not isinstance(active, str):
                raise TypeError("active must be a string")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            if not self._repair:
                self.problems.append(f"the model state {self.path} is damaged: {exc}")
                return
            aside = self.path.with_name(f"state.json.damaged-{int(time.time())}")
            os.replace(self.path, aside)
            message = (
                f"the model state {self.path} was damaged ({exc}) and moved to {aside}: the "
                "anti-rollback floors start again from the model that runs now"
            )
            _LOGGER.error("%s", message)
            self.problems.append(message)
            return
        self._floors, self._active = floors, active

    def floor(self, family: str | None) -> Floor | None:
        return self._floors.get(family) if family is not None else None

    def floors(self) -> dict[str, Floor]:
        return dict(self._floors)

    def active_model(self) -> Path | None:
        """The installed model that runs at start-up (instead of ``scoring.model_path``)."""
        if self._active is None:
            return None
        bundle = self.installed / self._active
        models = sorted(bundle.glob("*.tflite")) if bundle.is_dir() else []
        if len(models) != 1:
            self.problems.append(
                f"the active installed model {bundle} is missing or incomplete; starting with "
                "scoring.model_path"
            )
            return None
        return models[0]

    # -- installing ----------------------------------------------------------------------------

    def bundle_name(self, stem: str) -> str:
        """A new, sortable, unique directory name for a bundle of ``stem``."""
        return f"{time.time_ns():020d}-{stem}"

    def admit(
        self, path: Path, load: Callable[[Path], tuple[_T, ModelInfo]]
    ) -> tuple[_T, ModelInfo]:
        """``load`` (verify and check) the model at ``path`` from its copy in ``installed/``,
        so that it is still there after a restart; a refused copy is deleted again.

        A bundle already in ``installed/`` (the inbox moves bundles there) is used as it is.
        The copy is made before verification: the bytes verified are the bytes kept.
        """
        if self._in_installed(path):
            return self._checked(path, load)
        bundle = self.installed / self.bundle_name(path.stem)
        bundle.mkdir(parents=True)
        try:
            for src in (path, path.with_suffix(".json"), *manifest_paths(path)):
                if src.exists():
                    shutil.copyfile(src, bundle / src.name)
            return self._checked(bundle / path.name, load)
        except BaseException:
            remove_tree(bundle)
            raise

    def _in_installed(self, model: Path) -> bool:
        return model.parent.parent.resolve() == self.installed.resolve()

    def _checked(
        self, path: Path, load: Callable[[Path], tuple[_T, ModelInfo]]
    ) -> tuple[_T, ModelInfo]:
        model, info = load(path)
        self.check(info)
        return model, info

    # -- checks and updates --------------------------------------------------------------------

    def check(self, info: ModelInfo, *, startup: bool = False) -> None:
        """Refuse ``info`` when it is below its family's floor (a replacement must be above it;
        at start-up the model that set the floor may run again)."""
        floor = self.floor(info.family)
        if not info.signed or info.sequence is None or floor is None:
            return
        if info.sequence < floor.sequence or (not startup and info.sequence == floor.sequence):
            raise ModelError(
                f"{info.path}: sequence {info.sequence} of model family {info.family!r} is not "
                f"above {floor.sequence} ({floor.name} {floor.version}), the newest this gateway "
                f"has run (anti-rollback floor in {self.path}; rollback refused). Sign the model "
                "with a higher sequence"
            )

    def record(self, info: ModelInfo) -> None:
        """Raise ``info``'s family floor to its sequence and, when it is an installed bundle,
        make that bundle the active one; one atomic write."""
        floors = dict(self._floors)
        if info.signed and info.sequence is not None and info.family is not None:
            old = floors.get(info.family)
            if old is None or info.sequence > old.sequence:
                floors[info.family] = Floor(info.sequence, info.name, info.version, info.sha256)
        active = self._active
        if self._in_installed(info.path):
            active = info.path.parent.name
        elif info.signed:
            active = None  # a model from elsewhere now runs: start with scoring.model_path
        if floors == self._floors and active == self._active:
            return
        self._write(floors, active)
        self._floors, self._active = floors, active
        self.prune_installed()

    def _write(self, floors: dict[str, Floor], active: str | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        doc: dict[str, Any] = {
            "format": STATE_FORMAT,
            "active": active,
            "floors": {k: asdict(v) for k, v in sorted(floors.items())},
        }
        tmp = self.path.with_name("state.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.root)

    def prune_installed(self) -> None:
        """Keep the active bundle and the ``KEEP_INSTALLED`` newest others."""
        if not self.installed.is_dir():
            return
        others = sorted(
            p for p in self.installed.iterdir() if p.is_dir() and p.name != self._active
        )
        for bundle in others[:-KEEP_INSTALLED]:
            remove_tree(bundle)

    def set_aside(self, bundle: Path, reason: str) -> Path:
        """Move a refused bundle directory to ``rejected/`` with ``REJECTED.txt`` saying why."""
        self.rejected.mkdir(parents=True, exist_ok=True)
        aside = self.rejected / bundle.name
        os.replace(bundle, aside)
        with contextlib.suppress(OSError):
            (aside / "REJECTED.txt").write_text(reason + "\n", encoding="utf-8")
        self.prune_rejected()
        return aside

    def prune_rejected(self) -> None:
        if not self.rejected.is_dir():
            return
        bundles = sorted(p for p in self.rejected.iterdir() if p.is_dir())
        for bundle in bundles[:-KEEP_REJECTED]:
            remove_tree(bundle)


def _floor(entry: dict[str, Any]) -> Floor:
    sequence = entry["sequence"]
    if not isinstance(sequence, int) or isinstance(sequence, bool):
        raise TypeError(f"a floor's sequence must be an integer, not {sequence!r}")
    return Floor(sequence, str(entry["name"]), str(entry["version"]), str(entry["sha256"]))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Delete a bundle directory (flat: files only)."""
    for child in path.iterdir():
        with contextlib.suppress(OSError):
            child.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()


def load_startup_model(
    state: ModelState, model_path: Path, public_key_path: Path | None
) -> tuple[GatewayModel, ModelInfo]:
    """The model to start with: the active installed bundle when there is one and it still
    verifies (with the site key) and is not below its floor; else ``model_path``
    (:func:`~gateway.pipeline.hotswap.load_startup`). A refused bundle is set aside and noted
    in ``state.problems``. Either way the floor is raised to the model that runs."""
    active = state.active_model()
    if active is not None and public_key_path is None:
        state.problems.append(
            f"the installed model {active} is not used: scoring.public_key_path is not set"
        )
    elif active is not None and public_key_path is not None:
        key = load_public_key(public_key_path)  # a missing key stops start-up, bundle intact
        try:
            model, info = load_verified(active, key)
            state.check(info, startup=True)
        except ModelError as exc:
            aside = state.set_aside(active.parent, str(exc))
            message = (
                f"the installed gateway model was refused at start-up and moved to {aside}: "
                f"{exc}; running scoring.model_path instead"
            )
            _LOGGER.error("%s", message)
            state.problems.append(message)
        else:
            state.record(info)
            _LOGGER.info(
                "running the installed gateway model %s %s (family %s, sequence %s) from %s "
                "instead of scoring.model_path",
                info.name, info.version, info.family, info.sequence, active.parent,
            )  # fmt: skip
            return model, info
    model, info = load_startup(model_path, public_key_path)
    state.check(info, startup=True)
    state.record(info)
    return model, info
