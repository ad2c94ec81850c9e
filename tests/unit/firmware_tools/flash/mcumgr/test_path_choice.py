"""Which path a node's answers lead to, and the inventory's per-node MCUmgr keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_tools.flash.inventory import parse_inventory
from firmware_tools.flash.mcumgr.capabilities import (
    Capabilities,
    ImageSlot,
    NodeKind,
    choose_path,
)
from firmware_tools.flash.mcumgr.options import McuMgrOptions
from gateway.errors import ConfigError

SLOT = ImageSlot(0, 0, "0.0.0", b"\x01" * 32, True, True, False, True)


def caps(*groups: int, images: tuple[ImageSlot, ...] = (), profile: bool = False) -> Capabilities:
    return Capabilities(
        buf_size=1024,
        buf_count=4,
        params_known=True,
        groups=frozenset({0, *groups}),
        hash_types=frozenset({"sha256"}),
        images=images,
        has_profile=profile,
    )


def test_our_profile_first_then_fs_then_image() -> None:
    assert choose_path(caps(8, 1, images=(SLOT,), profile=True)).kind is NodeKind.PROFILE
    assert choose_path(caps(8, 1, images=(SLOT,))).kind is NodeKind.FS
    assert choose_path(caps(1, images=(SLOT,))).kind is NodeKind.IMAGE


def test_the_inventory_can_insist_and_a_missing_group_says_why() -> None:
    assert choose_path(caps(8, 1, images=(SLOT,)), NodeKind.IMAGE).kind is NodeKind.IMAGE
    none = choose_path(caps(8), NodeKind.IMAGE)
    assert none.kind is None
    assert "no img group" in none.reason
    bare = choose_path(caps(2))
    assert bare.kind is None
    assert bare.reason == "neither fs nor img group (it has os,stat)"


def test_buffers_decide_request_size_and_depth() -> None:
    c = caps(8)
    assert c.max_message == 1020  # the frame's length and CRC share the buffer
    assert c.pipeline_depth == 3
    assert c.pipeline_bytes == 2040
    assert "buf 1024 x 4" in c.describe()


def test_inventory_smp_keys_are_parsed_and_checked() -> None:
    inv = parse_inventory(
        '[[node]]\nid = "a"\ntransport = "smp-serial"\naddress = "/dev/ttyACM0"\n'
        'smp_kind = "fs"\nmodel_dir = "/lfs1/models/"\nfs_activate = "none"\n',
        Path("fleet.toml"),
    )
    assert inv.nodes[0].mcumgr == McuMgrOptions(NodeKind.FS, "/lfs1/models", "none", 0)
    with pytest.raises(ConfigError, match=r"node\[1\] \(a\)\.smp_kind"):
        parse_inventory(
            '[[node]]\nid = "a"\ntransport = "smp-serial"\naddress = "/x"\nsmp_kind = "zip"\n',
            Path("fleet.toml"),
        )
    with pytest.raises(ConfigError, match="only smp-serial nodes take this key"):
        parse_inventory(
            '[[node]]\nid = "a"\ntransport = "serial"\naddress = "/x"\nmodel_dir = "/lfs1"\n',
            Path("fleet.toml"),
        )
    with pytest.raises(ConfigError, match="model_dir"):
        parse_inventory(
            '[[node]]\nid = "a"\ntransport = "smp-serial"\naddress = "/x"\nmodel_dir = "../x"\n',
            Path("fleet.toml"),
        )


def test_image_firmware_is_a_file_beside_the_inventory(tmp_path: Path) -> None:
    (tmp_path / "app.bin").write_bytes(b"\x00" * 16)
    node = '[[node]]\nid = "a"\ntransport = "smp-serial"\naddress = "/x"\nimage_firmware = "{}"\n'
    inventory = parse_inventory(node.format("app.bin"), tmp_path / "fleet.toml")
    assert inventory.nodes[0].mcumgr.image_firmware == tmp_path / "app.bin"
    with pytest.raises(ConfigError, match=r"image_firmware.*no such file"):
        parse_inventory(node.format("missing.bin"), tmp_path / "fleet.toml")
