"""The Zephyr SMP servers are what smpclient's sdist shipped: every artifact is checked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fixtures.zephyr_smp import (
    CACHE_DIR,
    FS_SERVER,
    manifest_entry,
    unavailable_reason,
    verify,
)


def test_setup_installed_servers_that_match_their_sha256sums(tmp_path: Path) -> None:
    reason = unavailable_reason(*FS_SERVER)
    if reason is not None:
        pytest.skip(reason)
    checked = verify(CACHE_DIR)
    assert manifest_entry(*FS_SERVER)["artifact"] in checked
    assert len(checked) >= 20

    copy = tmp_path / "servers"
    copy.mkdir()
    exe = manifest_entry(*FS_SERVER)["artifact"]
    for name in ("SHA256SUMS", exe):
        shutil.copy(CACHE_DIR / name, copy / name)
    assert verify(copy) == [exe]
    data = bytearray((copy / exe).read_bytes())
    data[1000] ^= 0xFF
    (copy / exe).write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="sha256 differs"):
        verify(copy)
