"""Model upload goodput over an emulated 115200-baud serial line: ours vs SMP.

Both run in the same process and the same run, each against a simulated node on a pty that
paces both directions at the baud rate (8N1: 10 bits a byte, so the line carries baud / 10
bytes a second):

* ours: :class:`~firmware_tools.flash.serial_flasher.SerialFlasher` (binary chunks in COBS
  frames, window of 8 x 1 KiB, per-chunk CRC, every ACK after an fsync on the node) to the
  node's normal serial port, while the node keeps sending its own uplink frames;
* SMP: ``smp_upload_goodput`` from :mod:`firmware_tools.flash.smp_flasher` (smpclient's image
  upload over SMP serial framing) to the node's management port.

Goodput is model bytes over the time from BEGIN to the node's verified END (manifest and
final verification included), as a fraction of the line rate. The model is the shipped node
model padded to the benchmark size (a flatbuffer tolerates trailing bytes) and signed with a
throw-away key.

A third row (issue 15, :mod:`bench.flash_stock`): flash-model against a real Zephyr 4.4 SMP
server (native_sim, stock fs group, a pty without baud pacing) as a ratio of smpclient's own
``upload_file`` to the same server in the same run.

Run: python -m bench.flash [--quick]
Last line: RESULT flash ours_fraction_of_line=<x> smp_fraction_of_line=<y> stock_vs_smpclient=<z>
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.describe import build_manifest
from firmware_tools.flash.serial_flasher import SerialFlasher
from firmware_tools.signing import sign_manifest
from firmware_tools.sim.selftest import node_self_test
from firmware_tools.sim.serial_link import PtySerialLink
from firmware_tools.sim.slots import SlotStore
from firmware_tools.sim.xfer_node import XferNode
from gateway.protocol.manifest import DEFAULT_TARGET, TARGET_CLASSES
from gateway.protocol.signed_manifest import SignedManifest

NODE_MODEL = Path(__file__).resolve().parents[1] / "tinymodels" / "artifacts" / "node_model.tflite"
BAUD = 115_200
TARGET = TARGET_CLASSES[DEFAULT_TARGET]


def make_model(size: int, key: Ed25519PrivateKey, sequence: int) -> tuple[bytes, SignedManifest]:
    base = NODE_MODEL.read_bytes()
    data = base + bytes((i * 131 + 7) & 0xFF for i in range(max(0, size - len(base))))
    manifest = build_manifest(
        data,
        name="bench_model",
        version=f"1.{sequence}.0",
        sequence=sequence,
        arena_bytes=3136,
        created_at="2025-01-01T00:00:00Z",
    )
    return data, sign_manifest(manifest, key)


def open_store(directory: Path, key: Ed25519PrivateKey) -> SlotStore:
    return SlotStore.open(
        directory,
        public_key=key.public_key(),
        target=TARGET.name,
        slot_bytes=TARGET.flash_bytes,
        ram_bytes=TARGET.ram_bytes,
    )


async def ours_goodput(workdir: Path, key: Ed25519PrivateKey, size: int) -> float:
    """Bytes/s of model data through our binary transfer on the node's serial port."""
    artifact, signed = make_model(size, key, 2)
    store = open_store(workdir / "ours", key)
    node = XferNode("bench-ours", store, node_self_test(TARGET.ram_bytes))
    link = PtySerialLink("bench-ours", baud=BAUD, xfer=node)
    flasher = SerialFlasher("bench-ours", link.slave_path, baud=BAUD, timeout_s=5.0)
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(link.run(lambda _msg: None), name="bench:flash:ours-node")
            await link.ready.wait()
            await flasher.info()  # port open and node answering: not part of the transfer
            t0 = time.perf_counter()
            await flasher.upload(artifact, signed, lambda _done, _total: None)
            elapsed = time.perf_counter() - t0
            task.cancel()
    finally:
        await flasher.aclose()
        link.close()
    return len(artifact) / elapsed


async def smp_goodput(workdir: Path, key: Ed25519PrivateKey, size: int) -> float:
    """Bytes/s of model data through SMP (smpclient) on the node's management port."""
    try:
        from firmware_tools.flash.smp_flasher import smp_upload_goodput
        from firmware_tools.sim.smp_serial_link import SmpSerialLink
        from firmware_tools.sim.smp_server import SmpServer
    except ImportError as exc:
        print(f"SMP flasher not available ({exc}); reporting nan")
        return math.nan
    artifact, signed = make_model(size, key, 2)
    store = open_store(workdir / "smp", key)
    server = SmpServer(store, node_self_test(TARGET.ram_bytes), node_id="bench-smp")
    link = SmpSerialLink(server, baud=BAUD)
    upload: Callable[..., Awaitable[float]] = smp_upload_goodput
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(link.run(), name="bench:flash:smp-node")
            await link.ready.wait()
            rate = await upload(link.slave_path, artifact, signed, baud=BAUD)
            task.cancel()
    finally:
        link.close()
    return rate


async def run(size: int) -> tuple[float, float]:
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="bench-flash-") as tmp:
        workdir = Path(tmp)
        ours = await ours_goodput(workdir, key, size)
        smp = await smp_goodput(workdir, key, size)
    return ours, smp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 32 KiB model (< 60 s in all)")
    parser.add_argument("--size-kib", type=int, default=None, help="model size (default 96)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    size = (args.size_kib or (32 if args.quick else 96)) * 1024
    line = BAUD / 10
    ours, smp = asyncio.run(run(size))
    from bench.flash_stock import SIZE, stock_vs_smpclient

    stock, smpclient = asyncio.run(stock_vs_smpclient())
    print(f"model {size} bytes, line rate {line:.0f} B/s (115200 baud, 8N1)")
    print(f"ours: {ours:8.0f} B/s  = {ours / line:.3f} of line rate")
    print(f"SMP:  {smp:8.0f} B/s  = {smp / line:.3f} of line rate")
    print(
        f"real Zephyr fs server ({SIZE}-byte model, pty): flash-model {stock:8.0f} B/s, "
        f"smpclient upload_file {smpclient:8.0f} B/s"
    )
    print(
        f"RESULT flash ours_fraction_of_line={ours / line:.3f} smp_fraction_of_line={smp / line:.3f}"
        f" stock_vs_smpclient={stock / smpclient:.3f}"
    )


if __name__ == "__main__":
    main()
