"""Node-to-channel pins: which port, BLE address or broker a node's messages must come from.

Pins are configured (``nodes.pins``) or learned on first contact (trust on first use) and
kept in ``<data_dir>/node_pins.json``, written atomically (temporary file, fsync, rename),
so a crash leaves either the old file or the new one. ``fieldgate nodes unpin`` edits the
same file; a running gateway reads it again when it changed (see :meth:`PinStore.refresh`).
The number of learned pins is bounded by the node registry's cap: only admitted nodes are
pinned.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

_LOGGER = logging.getLogger(__name__)
PINS_FILE = "node_pins.json"
_FORMAT = 1


def pins_path_for(data_dir: Path) -> Path:
    return data_dir / PINS_FILE


def read_pins(path: Path) -> dict[str, dict[str, object]]:
    """The learned pins in ``path`` (``{node: {"channel": str, "since_ms": int}}``); empty
    when there is no file. A damaged file is moved aside (``.damaged``) and logged, never
    silently trusted: every node is then learned again on its next contact."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(raw)
        pins = data["pins"]
        if data.get("format") != _FORMAT or not isinstance(pins, dict):
            raise ValueError("unknown format")
        return {
            str(node): {"channel": str(entry["channel"]), "since_ms": int(entry["since_ms"])}
            for node, entry in pins.items()
        }
    except (ValueError, KeyError, TypeError) as exc:
        aside = path.with_name(path.name + ".damaged")
        with contextlib.suppress(OSError):
            path.replace(aside)
        _LOGGER.error(
            "node pins %s are unreadable (%s): moved to %s; nodes are pinned again on their "
            "next contact",
            path,
            exc,
            aside,
        )
        return {}


def write_pins(path: Path, pins: Mapping[str, Mapping[str, object]]) -> None:
    """Replace ``path`` with ``pins`` atomically (and durably: fsync before the rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    body = json.dumps({"format": _FORMAT, "pins": dict(sorted(pins.items()))}, indent=1)
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(body)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    with contextlib.suppress(OSError):  # the rename itself durable (not on every filesystem)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def unpin(path: Path, nodes: Iterable[str]) -> list[str]:
    """Forget the learned pins of ``nodes`` in the file; returns those that were pinned."""
    pins = read_pins(path)
    gone = [n for n in nodes if pins.pop(n, None) is not None]
    if gone:
        write_pins(path, pins)
    return gone


class PinStore:
    """Configured and learned pins; on the event loop, except :meth:`save` (a thread)."""

    def __init__(self, path: Path, configured: Mapping[str, str]) -> None:
        self.path = path
        self._configured = dict(configured)
        self._learned: dict[str, dict[str, object]] = {}
        self._unsaved: dict[str, dict[str, object]] = {}
        self._seen_mtime_ns: int | None = None

    def load(self, forget: Iterable[str] = ()) -> None:
        """Read the file (blocking: call before the sources start); forget ``forget``'s pins."""
        self._learned = read_pins(self.path)
        self._seen_mtime_ns = self._mtime_ns()
        gone = [n for n in forget if self._learned.pop(n, None) is not None]
        if gone:
            _LOGGER.warning("node pins forgotten by nodes.unpin: %s", ", ".join(sorted(gone)))
            self.save(self.snapshot())

    def channel_of(self, node_id: str) -> str | None:
        """Where ``node_id`` must speak from, or None when it is not pinned."""
        configured = self._configured.get(node_id)
        if configured is not None:
            return configured
        entry = self._learned.get(node_id)
        return None if entry is None else str(entry["channel"])

    def learn(self, node_id: str, channel: str) -> None:
        entry: dict[str, object] = {"channel": channel, "since_ms": time.time_ns() // 1_000_000}
        self._learned[node_id] = entry
        self._unsaved[node_id] = entry

    @property
    def dirty(self) -> bool:
        return bool(self._unsaved)

    def snapshot(self) -> dict[str, dict[str, object]]:
        """What :meth:`save` should write (taken on the loop)."""
        return dict(self._learned)

    def save(self, pins: Mapping[str, Mapping[str, object]]) -> None:
        """Write ``pins`` (a :meth:`snapshot`); blocking, so run it in a thread."""
        write_pins(self.path, pins)
        self._seen_mtime_ns = self._mtime_ns()

    def saved(self, pins: Mapping[str, Mapping[str, object]]) -> None:
        """After :meth:`save` (on the loop): what it wrote is no longer unsaved."""
        for node, entry in pins.items():
            if self._unsaved.get(node) is entry:
                del self._unsaved[node]

    def refresh(self) -> bool:
        """Read the file again if someone else (``fieldgate nodes unpin``) changed it since
        we last read or wrote it; pins learned meanwhile and not yet saved are kept. True
        when it was read again. A stat, and a small read only when it changed."""
        mtime = self._mtime_ns()
        if mtime == self._seen_mtime_ns:
            return False
        self._learned = {**read_pins(self.path), **self._unsaved}
        self._seen_mtime_ns = mtime
        return True

    def __len__(self) -> int:
        return len(self._learned)

    def _mtime_ns(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
