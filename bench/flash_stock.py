"""flash-model vs smpclient's own ``upload_file`` to a real Zephyr 4.4 SMP server (fs group).

The server is the native_sim ``serial_fs`` build from smpclient's sdist (installed by
``deploy/setup.sh test``): stock MCUmgr, 4 x 1024-byte buffers, a pty with no baud pacing, so
request count, chunk size and reply latency decide. Its littlefs holds 16 KiB, so each sample
starts a fresh server (a fresh flash) and uploads one model file of :data:`SIZE` bytes:

* flash-model: :meth:`McuMgrFlasher.upload` on the stock fs path after its ``info`` (which
  flash-model always asks first, as smpclient's connect reads the MCUmgr params): model
  upload, its sha256 checked by the node's hash command, the signed manifest uploaded and
  checked too, all in one pipeline of two requests in flight: more work than the baseline,
  all counted;
* smpclient: ``SMPClient.upload_file`` of the same bytes, connected the same way.

Goodput is model bytes over the upload's wall time; the ratio is flash-model over smpclient,
median of :data:`ROUNDS` alternating samples. Run by ``python -m bench.flash``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.describe import build_manifest
from firmware_tools.flash.mcumgr.flasher import McuMgrFlasher
from firmware_tools.signing import sign_manifest
from gateway.protocol.signed_manifest import SignedManifest
from tests.fixtures.zephyr_smp import FS_SERVER, NativeSimServer, unavailable_reason

NODE_MODEL = Path(__file__).resolve().parents[1] / "tinymodels" / "artifacts" / "node_model.tflite"
SIZE = 3500  # model + manifest must fit the server's 16 KiB littlefs with room to spare
ROUNDS = 5


def _model() -> tuple[bytes, SignedManifest]:
    base = NODE_MODEL.read_bytes()
    artifact = base[:SIZE]
    manifest = build_manifest(base, name="bench", version="1.0.0", sequence=1, arena_bytes=3136)
    manifest = dataclasses.replace(
        manifest, sha256=hashlib.sha256(artifact).hexdigest(), size_bytes=len(artifact)
    )
    return artifact, sign_manifest(manifest, Ed25519PrivateKey.generate())


async def _ours(server: NativeSimServer, artifact: bytes, signed: SignedManifest) -> float:
    flasher = McuMgrFlasher("bench", server.address)
    try:
        # As flash-model does before every upload: ask the node (capabilities, what it
        # holds). Like smpclient's connect (MCUmgr params), not part of the transfer.
        await flasher.info()
        t0 = time.perf_counter()
        await flasher.upload(artifact, signed, lambda _d, _t: None)
        return len(artifact) / (time.perf_counter() - t0)
    finally:
        await flasher.aclose()


async def _smpclient(server: NativeSimServer, artifact: bytes) -> float:
    from smpclient import SMPClient
    from smpclient.transport.serial import SMPSerialTransport

    client = SMPClient(SMPSerialTransport(), server.address, timeout_s=5.0)
    await client.connect(5.0)  # reads the MCUmgr params: fills the node's buffer
    try:
        t0 = time.perf_counter()
        async for _off in client.upload_file(artifact, "/lfs1/model.tflite"):
            pass
        return len(artifact) / (time.perf_counter() - t0)
    finally:
        await client.disconnect()


async def stock_vs_smpclient() -> tuple[float, float]:
    """(flash-model B/s, smpclient B/s), medians; nan when the servers are not installed."""
    reason = unavailable_reason(*FS_SERVER)
    if reason is not None:
        print(f"stock SMP server row skipped: {reason}")
        return float("nan"), float("nan")
    artifact, signed = _model()
    ours: list[float] = []
    theirs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-stock-") as tmp:
        for i in range(ROUNDS):
            for who in ("ours", "smpclient") if i % 2 == 0 else ("smpclient", "ours"):
                server = NativeSimServer(*FS_SERVER, workdir=Path(tmp) / f"{who}-{i}")
                server.start()
                try:
                    if who == "ours":
                        ours.append(await _ours(server, artifact, signed))
                    else:
                        theirs.append(await _smpclient(server, artifact))
                finally:
                    server.stop()
    return statistics.median(ours), statistics.median(theirs)
