"""Online backup and restore of a gateway's state (journal, alert history, baselines, ...).

Every SQLite file in ``data_dir`` (and the journal, wherever it lives) is copied with SQLite's
backup API, page by page under a read transaction, so a backup taken while the gateway runs
is a consistent snapshot of each file: nothing half-written, WAL content included. Restore is
the reverse and refuses to run while a gateway holds the files (the service must be stopped:
a live journal cannot be swapped under its writer).
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.store.recovery import is_locked

_LOGGER = logging.getLogger(__name__)
MANIFEST = "fieldgate-backup.json"
# State that is not SQLite, relative to data_dir. Each is replaced atomically by its writer
# (node pins: gateway.identity.pins; the gateway model's floors and installed bundles:
# gateway.pipeline.model_state), so a plain copy is a consistent file. Without them a restored
# gateway would re-learn pins from whoever speaks first and forget its anti-rollback floors.
PLAIN_STATE = ("node_pins.json", "gateway-model/state.json", "gateway-model/installed")


@dataclass(frozen=True)
class Copied:
    name: str
    bytes: int


def state_files(cfg: GatewayConfig) -> list[Path]:
    """The SQLite files that make up a gateway's state."""
    files = {cfg.journal_path} if cfg.journal_path.exists() else set()
    if cfg.data_dir.is_dir():
        files.update(p for p in cfg.data_dir.glob("*.db") if p.is_file())
    return sorted(files)


def _copy(source: Path, target: Path) -> int:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        # 1024 pages a step: the gateway's writer is blocked only for one step at a time.
        src.backup(dst, pages=1024, sleep=0.005)
        result = dst.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise sqlite3.DatabaseError(f"{target}: the copy fails quick_check: {result}")
    finally:
        dst.close()
        src.close()
    return target.stat().st_size


def backup(cfg: GatewayConfig, dest: Path) -> list[Copied]:
    """Copy every state file into a new directory ``dest``; write a manifest beside them."""
    dest.mkdir(parents=True, exist_ok=False)
    copied = []
    for source in state_files(cfg):
        size = _copy(source, dest / source.name)
        copied.append(Copied(source.name, size))
        _LOGGER.info("backup: %s (%d bytes)", source, size)
    plain = []
    for name in PLAIN_STATE:
        source = cfg.data_dir / name
        if source.is_dir():
            shutil.copytree(source, dest / "plain" / name)
        elif source.is_file():
            (dest / "plain" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / "plain" / name)
        else:
            continue
        plain.append(name)
        _LOGGER.info("backup: %s", source)
    manifest = {
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "site": cfg.site,
        "files": [c.name for c in copied],
        "journal": cfg.journal_path.name if cfg.journal_path.exists() else None,
        "plain": plain,
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return copied


class GatewayRunning(RuntimeError):
    """Restore was asked for while a gateway holds the state files."""


def restore(cfg: GatewayConfig, source: Path) -> list[Copied]:
    """Put a backup made by :func:`backup` in place of the gateway's state files."""
    manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    targets = {name: cfg.data_dir / name for name in manifest["files"]}
    if manifest["journal"] is not None:
        targets[manifest["journal"]] = cfg.journal_path
    if is_locked(cfg.journal_path):
        raise GatewayRunning(
            f"{cfg.journal_path} is in use: stop the gateway first (systemctl stop fieldgate)"
        )
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for name, target in targets.items():
        for suffix in ("-wal", "-shm"):
            target.with_name(target.name + suffix).unlink(missing_ok=True)
        tmp = target.with_name(target.name + ".restoring")
        tmp.unlink(missing_ok=True)
        size = _copy(source / name, tmp)
        tmp.replace(target)
        copied.append(Copied(name, size))
    for name in manifest.get("plain", []):  # absent from backups made before it existed
        copied.append(_restore_plain(source / "plain" / name, cfg.data_dir / name, name))
    return copied


def _restore_plain(source: Path, target: Path, name: str) -> Copied:
    tmp = target.with_name(target.name + ".restoring")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, tmp)
        shutil.rmtree(target, ignore_errors=True)
        size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    else:
        shutil.copy2(source, tmp)
        size = tmp.stat().st_size
    tmp.replace(target)
    return Copied(name, size)
