"""The hot-swap trigger of a running gateway: a watched directory for new gateway models.

``<data_dir>/gateway-model/incoming/`` is polled every ``scoring.model_inbox_poll_s``
(one directory listing: cheap). What it takes:

* a **bundle directory** (what ``fieldgate model install`` makes: the files are written into
  ``incoming/.install-*`` and the directory renamed into place, so it appears whole): one
  ``.tflite`` with its runtime settings ``<stem>.json`` and signed manifest
  ``<stem>.manifest.cbor`` (or ``.json``);
* **loose files** copied straight into ``incoming/``: a ``.tflite`` is taken once its
  ``.json`` and signed manifest are there too and none of the three changed since the
  previous poll (a copy still in progress is left alone). Names starting with ``.`` are
  ignored.

A bundle is moved into ``installed/`` and swapped in with exactly the checks of
:meth:`~gateway.pipeline.pipeline.ScoringPipeline.swap_model` (signature, runtime settings,
channels, family, anti-rollback floor). Accepted: it becomes the active model (also after a
restart) and scoring carries on without a restart. Refused: one log line, a
``gateway_model_rejected`` system alert (raised again for each refusal, cleared by the next
accepted model) and the files are set aside in ``rejected/`` with ``REJECTED.txt``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.alerts.system import SystemAlert
from gateway.errors import ModelError
from gateway.log_limit import LimitedWarning
from gateway.pipeline.hotswap import ModelInfo
from gateway.pipeline.model_state import ModelState
from gateway.protocol.signed_manifest import manifest_paths

_LOGGER = logging.getLogger(__name__)

MAX_BUNDLE_BYTES = 64 * 1024 * 1024  # far above any gateway model; bounds what a drop can cost
MAX_ENTRIES = 64  # directory entries taken per poll
MAX_SCAN = 4096  # directory entries read per poll (a flood of files costs a bounded listing)


@dataclass(frozen=True, slots=True)
class InboxResult:
    bundle: str
    info: ModelInfo | None  # the model now running, or None when refused
    reason: str | None = None  # why it was refused
    set_aside: Path | None = None


def bundle_files(model: Path) -> list[Path]:
    """The files that travel with a model: itself, its runtime settings, signed manifests."""
    return [model, model.with_suffix(".json"), *manifest_paths(model)]


class ModelInbox:
    """Polls ``state.incoming`` and hands complete bundles to ``swap``."""

    def __init__(
        self,
        state: ModelState,
        swap: Callable[[Path], Awaitable[ModelInfo]],
        alert: SystemAlert,
        poll_s: float,
    ) -> None:
        self.state = state
        self._swap = swap
        self._alert = alert
        self._poll_s = poll_s
        self._loose_seen: dict[str, tuple[tuple[int, int], ...]] = {}
        self._warn = LimitedWarning(_LOGGER)
        self.results: list[InboxResult] = []  # the latest few, newest last (for status/tests)

    async def run(self, ready: asyncio.Event) -> None:
        """Raise what the state found at start-up, then poll until cancelled (unless
        ``poll_s`` is 0)."""
        for problem in self.state.problems:
            self._alert.raise_(problem)
        if self._poll_s <= 0:
            return  # not watched (scoring.model_inbox_poll_s = 0)
        await asyncio.to_thread(self.state.incoming.mkdir, parents=True, exist_ok=True)
        await ready.wait()  # the scoring worker runs: swaps can be served
        while True:
            await self.poll_once()
            await asyncio.sleep(self._poll_s)

    async def poll_once(self) -> list[InboxResult]:
        """Take every complete bundle now in ``incoming/``; returns what happened to each."""
        bundles = await asyncio.to_thread(self._collect)
        out = []
        for bundle in bundles:
            result = await self._install(bundle)
            out.append(result)
            self.results = [*self.results[-9:], result]
        return out

    # -- finding bundles (file I/O: in a thread) ---------------------------------------------

    def _collect(self) -> list[Path]:
        """Complete bundles, each moved into ``installed/`` under a fresh name.

        An entry that cannot be handled (not ours to move, gone meanwhile) is skipped with a
        rate-limited warning: whatever is dropped here must never stop the gateway.
        """
        try:
            with os.scandir(self.state.incoming) as it:
                entries = sorted(itertools.islice(it, MAX_SCAN), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        ready: list[Path] = []
        loose: dict[str, list[Path]] = {}
        for entry in entries[:MAX_ENTRIES]:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    ready.append(self._move(path, path.name))
                elif entry.name.endswith(".tflite") and entry.is_file(follow_symlinks=False):
                    loose[path.stem] = [p for p in bundle_files(path) if p.exists()]
            except OSError as exc:
                self._warn.warning("cannot take %s from the model inbox: %s", path, exc)
        for stem, files in loose.items():
            try:
                bundle = self._loose_bundle(stem, files)
            except OSError as exc:
                self._warn.warning("cannot take %s from the model inbox: %s", stem, exc)
                continue
            if bundle is not None:
                ready.append(bundle)
        for stem in set(self._loose_seen) - set(loose):
            del self._loose_seen[stem]
        return ready

    def _loose_bundle(self, stem: str, files: list[Path]) -> Path | None:
        """Loose files of ``stem`` as a bundle once complete and unchanged since last poll."""
        stamp = tuple(_stamp(p) for p in files)
        complete = len(files) >= 3  # model, settings and at least one signed manifest
        if not complete or self._loose_seen.get(stem) != stamp:
            self._loose_seen[stem] = stamp
            return None
        del self._loose_seen[stem]
        staging = self.state.incoming / f".loose-{self.state.bundle_name(stem)}"
        staging.mkdir()
        for f in files:
            os.replace(f, staging / f.name)
        return self._move(staging, stem)

    def _move(self, bundle: Path, label: str) -> Path:
        self.state.installed.mkdir(parents=True, exist_ok=True)
        # fieldgate model install names bundles <time>-<stem>: keep the stem only
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", re.sub(r"^\d+-", "", label))[-64:] or "model"
        target = self.state.installed / self.state.bundle_name(safe)
        os.replace(bundle, target)
        return target

    # -- installing ---------------------------------------------------------------------------

    async def _install(self, bundle: Path) -> InboxResult:
        try:
            model = await asyncio.to_thread(_the_model, bundle)
            info = await self._swap(model)
        except (ModelError, OSError) as exc:
            return await self._reject(bundle, str(exc))
        _LOGGER.info(
            "gateway model installed from the inbox: %s %s (family %s, sequence %s) in %s",
            info.name, info.version, info.family, info.sequence, bundle,
        )  # fmt: skip
        self._alert.clear()
        return InboxResult(bundle.name, info)

    async def _reject(self, bundle: Path, reason: str) -> InboxResult:
        reason = reason.replace(str(bundle), str(self.state.rejected / bundle.name))
        try:
            aside: Path = await asyncio.to_thread(self.state.set_aside, bundle, reason)
        except OSError as exc:  # left in installed/ (never active), pruned later
            _LOGGER.error("cannot set %s aside: %s", bundle, exc)
            aside = bundle
        _LOGGER.error("gateway model refused, set aside in %s: %s", aside, reason)
        # Each refusal reaches staff: a raised alert is replaced by the new one.
        self._alert.clear()
        self._alert.raise_(f"a new gateway model was refused (set aside in {aside}): {reason}")
        return InboxResult(bundle.name, None, reason, aside)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _the_model(bundle: Path) -> Path:
    """The one ``.tflite`` of a bundle, after checking the bundle's shape and size."""
    entries = list(bundle.iterdir())
    odd = [p.name for p in entries if p.is_symlink() or not p.is_file()]
    if odd:  # a link to /dev/zero or elsewhere must not be read
        raise ModelError(f"{bundle.name}: only regular files belong in a bundle, not {odd}")
    files = entries
    models = [p for p in files if p.suffix == ".tflite"]
    if len(models) != 1:
        raise ModelError(
            f"{bundle.name}: a bundle holds exactly one .tflite (found {len(models)}) with its "
            "<stem>.json and <stem>.manifest.cbor; use `fieldgate model install MODEL`"
        )
    total = sum(p.stat().st_size for p in files)
    if total > MAX_BUNDLE_BYTES:
        raise ModelError(
            f"{bundle.name}: {total} bytes is more than a gateway model bundle may hold "
            f"({MAX_BUNDLE_BYTES})"
        )
    missing = [p.name for p in bundle_files(models[0])[:2] if not p.exists()]
    if missing:
        raise ModelError(f"{bundle.name}: {', '.join(missing)} missing beside the model")
    return models[0]
