"""What watching for new gateway models costs, and what installing one through the inbox adds.

Method (one run, in this process, baseline and measurement minutes apart at most):

* ``poll``: :meth:`ModelInbox.poll_once` on an empty ``incoming/`` (what the running gateway
  does every ``scoring.model_inbox_poll_s``: a listing in a worker thread). Baseline: a bare
  ``os.scandir`` of the same directory on the loop.
* ``install``: ``poll_once`` with one signed bundle waiting (move into ``installed/``,
  verify signature, artifact and runtime settings, load LiteRT, check family and floor, write
  the floor, swap between batches). Baseline: ``ScoringPipeline.swap_model`` of the same
  kind of bundle without a model state (verify, load, swap only). Each model is a copy of
  the shipped one, signed with a fresh key, a higher sequence each time.

Run: python -m bench.model_inbox [--quick]
Last line: RESULT model_inbox poll_us=<x> poll_baseline_us=<y> install_ms=<z> swap_ms=<w>
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.describe import build_manifest
from firmware_tools.signing import sign_manifest, write_signed
from gateway.alerts.system import SystemAlert
from gateway.pipeline import ScoringConfig, ScoringPipeline
from gateway.pipeline.model_inbox import ModelInbox
from gateway.pipeline.model_state import ModelState
from tinymodels.runtime import DEFAULT_GATEWAY_MODEL


def _signed(directory: Path, key: Ed25519PrivateKey, sequence: int) -> Path:
    directory.mkdir(parents=True)
    model = directory / DEFAULT_GATEWAY_MODEL.name
    shutil.copyfile(DEFAULT_GATEWAY_MODEL, model)
    shutil.copyfile(DEFAULT_GATEWAY_MODEL.with_suffix(".json"), model.with_suffix(".json"))
    manifest = build_manifest(
        model.read_bytes(), name=model.stem, version=f"2.{sequence}.0", sequence=sequence,
        arena_bytes=0, runtime=model.with_suffix(".json").read_bytes(),
    )  # fmt: skip
    write_signed(sign_manifest(manifest, key), model)
    return model


async def _measure(work: Path, swaps: int, polls: int) -> dict[str, float]:
    key = Ed25519PrivateKey.generate()
    pub = work / "model-signing.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config = ScoringConfig(public_key_path=pub, max_batch_delay_ms=0)
    state = ModelState(work / "gateway-model")
    state.incoming.mkdir(parents=True)
    piped = ScoringPipeline(config, model_state=state)
    plain = ScoringPipeline(config)
    alerts = SystemAlert("gateway_model_rejected", lambda event: None)
    inbox = ModelInbox(state, piped.swap_model, alerts, 0.0)
    out: dict[str, float] = {}
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(p.run(), name=f"bench:{i}") for i, p in enumerate((piped, plain))]
        await piped.ready.wait()
        await plain.ready.wait()

        baseline, polled = [], []
        for _ in range(polls):
            t0 = time.perf_counter_ns()
            list(os.scandir(state.incoming))
            baseline.append(time.perf_counter_ns() - t0)
            t0 = time.perf_counter_ns()
            await inbox.poll_once()
            polled.append(time.perf_counter_ns() - t0)
        out["poll_us"] = statistics.median(polled) / 1e3
        out["poll_baseline_us"] = statistics.median(baseline) / 1e3

        direct, installs = [], []
        for i in range(swaps):
            model = _signed(work / f"direct{i}", key, i + 2)
            t0 = time.perf_counter_ns()
            await plain.swap_model(model)
            direct.append(time.perf_counter_ns() - t0)
            bundle = _signed(work / f"bundle{i}", key, i + 2).parent
            os.rename(bundle, state.incoming / bundle.name)
            t0 = time.perf_counter_ns()
            [result] = await inbox.poll_once()
            installs.append(time.perf_counter_ns() - t0)
            assert result.info is not None, result.reason
        out["install_ms"] = statistics.median(installs) / 1e6
        out["swap_ms"] = statistics.median(direct) / 1e6
        for task in tasks:
            task.cancel()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (< 60 s)")
    args = parser.parse_args()
    swaps, polls = (5, 200) if args.quick else (20, 2000)
    with tempfile.TemporaryDirectory(prefix="bench-inbox-") as tmp:
        result = asyncio.run(_measure(Path(tmp), swaps, polls))
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average)")
    print(f"empty poll          median {result['poll_us']:.1f} µs "
          f"(bare scandir {result['poll_baseline_us']:.1f} µs), {polls} polls")  # fmt: skip
    print(f"install via inbox   median {result['install_ms']:.1f} ms "
          f"(swap_model alone {result['swap_ms']:.1f} ms), {swaps} models")  # fmt: skip
    print("RESULT model_inbox " + " ".join(f"{k}={v:.3g}" for k, v in sorted(result.items())))


if __name__ == "__main__":
    main()
