"""The hot-swap trigger of a running gateway: `fieldgate model install` (the real command, a
subprocess) drops a model into the watched directory of the real gateway app; a valid newer
model is swapped in while readings keep being scored, a tampered one is set aside with an
alert, and after a restart an older one is refused."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from gateway.events import AlertEvent, AlertEventKind, AnomalyScore, Observation, ScoreSource
from gateway.ingest import Envelope
from gateway.outputs.bus import Gap, Subscription
from gateway.pipeline.model_state import model_dir_for
from gateway.protocol.messages import Transport
from tests.fixtures.cli import fieldgate
from tests.fixtures.gateway import gateway_config, running_gateway, wait_until
from tests.unit.pipeline.helpers import batches, pump_frame, signed_copy, write_key_pair

T0 = 1_700_000_000_000


async def _model_event(events: Subscription) -> AlertEvent:
    """The next gateway_model_rejected event (the old sample times also make the node silent)."""
    async for item in events:
        if not isinstance(item, Gap) and item.alert.rule == "gateway_model_rejected":
            return item
    raise AssertionError("the alert stream ended")


def _config_file(tmp_path: Path, pub: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "var"}"\n[scoring]\npublic_key_path = "{pub}"\n'
        "model_inbox_poll_s = 0.05\ncalibration_rows = 64\nmax_batch_delay_ms = 0\n"
        "[mqtt]\nenabled = false\n[metrics]\nenabled = false\n"
    )
    return path


async def test_a_model_dropped_into_the_running_gateway_is_verified_and_swapped_in(
    tmp_path: Path,
) -> None:
    key, pub = write_key_pair(tmp_path)
    config_file = _config_file(tmp_path, pub)
    config = gateway_config(
        tmp_path,
        scoring={"public_key_path": str(pub), "model_inbox_poll_s": 0.05,
                 "calibration_rows": 64, "max_batch_delay_ms": 0},
    )  # fmt: skip
    newer = signed_copy(tmp_path / "v21", key, version="2.1.0", sequence=2)
    tampered = signed_copy(tmp_path / "bad", key, version="2.2.0", sequence=3)
    settings = json.loads(tampered.with_suffix(".json").read_text())
    settings["features"]["threshold_factor"] = 1e6
    tampered.with_suffix(".json").write_text(json.dumps(settings))
    msgs = batches("pump-1", pump_frame(21, 300), per_batch=10, t0_ms=T0)
    state_dir = model_dir_for(tmp_path / "var")

    async with running_gateway(config, wait_sources=False) as gw:
        scores: list[AnomalyScore] = []

        def sink(obs: Sequence[Observation]) -> None:
            scores.extend(
                o for o in obs if isinstance(o, AnomalyScore) and o.source is ScoreSource.GATEWAY
            )

        gw.pipeline.add_sink(sink)
        events = gw.alert_bus.subscribe(100)

        async def feed(first: int, last: int) -> None:
            for msg in msgs[first:last]:
                await gw.queue.put(Envelope(msg, Transport.SERIAL, msg.samples[-1].t))
            await wait_until(lambda: len(scores) >= last * 10 - 64, what="scores")

        await feed(0, 15)

        # A tampered model: the command refuses it here, and with --no-check the gateway does.
        refused = await asyncio.to_thread(
            fieldgate, "model", "install", str(tampered), "-c", str(config_file)
        )
        assert refused.returncode == 1
        assert "changed after signing" in refused.stderr
        forced = await asyncio.to_thread(
            fieldgate, "model", "install", str(tampered), "--no-check", "-c", str(config_file)
        )
        assert forced.returncode == 0, forced.stderr
        await wait_until(lambda: any((state_dir / "rejected").glob("*")), what="set aside")
        [aside] = (state_dir / "rejected").iterdir()
        assert "changed after signing" in (aside / "REJECTED.txt").read_text()
        assert sorted(p.name for p in aside.iterdir()) == [
            "REJECTED.txt", "gateway_model.json", "gateway_model.manifest.cbor",
            "gateway_model.manifest.json", "gateway_model.tflite",
        ]  # fmt: skip
        event = await _model_event(events)
        assert event.kind is AlertEventKind.RAISED
        assert "threshold" in event.alert.message or "runtime" in event.alert.message
        assert gw.pipeline.model_info.version == "2.0.0"

        # A valid newer model: queued by the command, swapped in, scoring carries on.
        done = await asyncio.to_thread(
            fieldgate, "model", "install", str(newer), "-c", str(config_file)
        )
        assert done.returncode == 0, done.stderr
        assert "sequence 2" in done.stdout
        await wait_until(lambda: gw.pipeline.model_info.version == "2.1.0", what="the swap")
        await feed(15, 30)
        cleared = await _model_event(events)
        assert cleared.kind is AlertEventKind.CLEARED
    after = [s for s in scores if s.t_ms > msgs[14].samples[-1].t]
    assert len(after) == 150  # every row after the swap scored, none waited for calibration
    assert {s.model_version for s in after} == {"2.1.0"}
    status = fieldgate("model", "status", "-c", str(config_file))
    assert "floor gateway_model: sequence 2" in status.stdout
    assert "rejected" in status.stdout

    # After a restart the installed model runs, and an older one copied in loose is refused.
    older = signed_copy(tmp_path / "v201", key, version="2.0.1", sequence=1)
    async with running_gateway(config, wait_sources=False) as gw:
        assert gw.pipeline.model_info.version == "2.1.0"
        events = gw.alert_bus.subscribe(100)
        for src in older.parent.iterdir():
            shutil.copy(src, state_dir / "incoming" / src.name)
        event = await _model_event(events)
        assert "rollback refused" in event.alert.message
        assert gw.pipeline.model_info.version == "2.1.0"
    assert list((state_dir / "incoming").iterdir()) == []
