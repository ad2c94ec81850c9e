"""Orchestrator bookkeeping: pre-flight refusals, retries with backoff, resume, outcomes.

The nodes here are ScriptedFlasher test doubles (see its docstring): these tests are about the
orchestrator's decisions and counts, not about any transport.
"""

from __future__ import annotations

import json
import random
import zlib

import pytest

from firmware_tools.flash.api import FlashResult, Outcome
from firmware_tools.flash.orchestrate import (
    FlashOptions,
    all_ok,
    backoff_delay,
    dry_run,
    flash_fleet,
    nominal_rate,
    report_json,
)
from gateway.protocol.signed_manifest import SignedManifest
from gateway.protocol.slots import RefusalReason
from tests.unit.firmware_tools.flash.scripted_flasher import (
    CHUNK,
    Script,
    ScriptedFlasher,
    running_slot,
)

FAST = FlashOptions(retries=3, backoff_initial_s=0.001, backoff_max_s=0.004)
Model = tuple[bytes, SignedManifest]


async def flash_one(flasher: ScriptedFlasher, model: Model, **kw: object) -> FlashResult:
    artifact, signed = model
    options = FlashOptions(**{**vars_of(FAST), **kw})  # type: ignore[arg-type]
    [result] = await flash_fleet([flasher], artifact, signed, options=options)
    return result


def vars_of(options: FlashOptions) -> dict[str, object]:
    return {f: getattr(options, f) for f in options.__dataclass_fields__}


async def test_a_node_is_flashed_and_reports_old_and_new_versions(model: Model) -> None:
    node = ScriptedFlasher("pump-01", running=running_slot("1.0.0", 1))
    result = await flash_one(node, model)
    assert result.outcome is Outcome.FLASHED
    assert (result.old_version, result.new_version) == ("1.0.0", "1.1.0")
    assert result.bytes_sent == len(model[0])
    assert result.attempts == 1
    assert node.calls == ["info", "upload", "activate"]


async def test_a_cut_transfer_is_retried_and_resumes_from_the_nodes_offset(model: Model) -> None:
    cuts = [2 * CHUNK, 4 * CHUNK]
    node = ScriptedFlasher("pump-01", running=running_slot(), script=Script(cut_upload_at=cuts))
    result = await flash_one(node, model)
    assert result.outcome is Outcome.FLASHED
    assert result.attempts == 3
    assert node.upload_starts == [0, 2 * CHUNK, 4 * CHUNK]
    # Resumed, not restarted: every byte crossed the link once.
    assert result.bytes_sent == len(model[0])


async def test_a_transfer_failing_every_attempt_ends_failed_saying_it_resumes(model: Model) -> None:
    node = ScriptedFlasher(
        "pump-01", running=running_slot(), script=Script(cut_upload_at=[CHUNK] * 10)
    )
    result = await flash_one(node, model, retries=2)
    assert result.outcome is Outcome.FAILED
    assert result.attempts == 3
    assert "link dropped mid-transfer" in result.reason
    assert "after 3 attempts" in result.reason
    assert "resume" in result.reason
    assert result.bytes_sent == CHUNK  # the later attempts had nothing new to send


async def test_an_unreachable_node_is_retried_then_reported_with_what_to_check(
    model: Model,
) -> None:
    node = ScriptedFlasher("pump-07", script=Script(unreachable_infos=99))
    result = await flash_one(node, model, retries=1)
    assert result.outcome is Outcome.UNREACHABLE
    assert result.attempts == 2
    assert result.old_version is None
    assert result.reason.startswith("pump-07: node unreachable: no answer")
    assert "powered" in result.reason
    assert "transfers resume" in result.reason


async def test_a_node_that_answers_on_the_second_try_is_flashed(model: Model) -> None:
    node = ScriptedFlasher("pump-01", running=running_slot(), script=Script(unreachable_infos=1))
    result = await flash_one(node, model)
    assert (result.outcome, result.attempts) == (Outcome.FLASHED, 2)


async def test_a_busy_node_is_retried(model: Model) -> None:
    node = ScriptedFlasher("pump-01", running=running_slot(), script=Script(busy_uploads=2))
    result = await flash_one(node, model)
    assert (result.outcome, result.attempts) == (Outcome.FLASHED, 3)


@pytest.mark.parametrize(
    "reason",
    [RefusalReason.BAD_SIGNATURE, RefusalReason.BAD_HASH, RefusalReason.UNSIGNED],
)
async def test_a_node_refusal_is_final_and_says_what_to_do(
    model: Model, reason: RefusalReason
) -> None:
    node = ScriptedFlasher("pump-01", running=running_slot(), script=Script(refuse_upload=reason))
    result = await flash_one(node, model)
    assert result.outcome is Outcome.REFUSED
    assert result.attempts == 1
    assert node.calls == ["info", "upload"]
    assert result.reason.startswith(f"pump-01: node refused the model ({reason.value})")
    assert " — " in result.reason  # followed by the advice


async def test_a_failed_self_test_is_reported_as_rolled_back(model: Model) -> None:
    node = ScriptedFlasher("pump-01", running=running_slot(), script=Script(fail_self_test=True))
    result = await flash_one(node, model)
    assert result.outcome is Outcome.ROLLED_BACK
    assert "runs its previous model again" in result.reason


async def test_a_lost_activate_reply_is_settled_by_asking_the_node(model: Model) -> None:
    node = ScriptedFlasher(
        "pump-01", running=running_slot(), script=Script(drop_link_after_activate=True)
    )
    result = await flash_one(node, model)
    assert result.outcome is Outcome.FLASHED
    assert node.calls == ["info", "upload", "activate", "info"]
    assert result.attempts == 2


async def test_a_node_already_running_the_model_is_left_alone(model: Model) -> None:
    m = model[1].manifest
    current = running_slot(m.version, m.sequence)
    current = type(current)(
        0, m.name, m.version, bytes.fromhex(m.sha256)[:8], m.sequence, True, True
    )
    node = ScriptedFlasher("pump-01", running=current)
    result = await flash_one(node, model)
    assert result.outcome is Outcome.ALREADY_CURRENT
    assert node.calls == ["info"]
    assert all_ok([result])


@pytest.mark.parametrize(
    ("node_kw", "expected_target", "says"),
    [
        (
            {"target": "cortex-m0-32k"},
            None,
            "built for cortex-m4-256k but the node is cortex-m0-32k",
        ),
        ({"running": running_slot("1.3.0", 5)}, None, "sequence 2 is not above the 5"),
        ({"running": running_slot("1.0.0", 2)}, None, "--sequence 3"),
        ({"slot_bytes": 100}, None, "a slot holds 100"),
        ({"ram_bytes": 1000}, None, "needs a 2048-byte arena"),
        ({}, "esp32-s3", "the inventory says target esp32-s3"),
    ],
)
async def test_preflight_refuses_early_without_sending_a_byte(
    model: Model, node_kw: dict[str, object], expected_target: str | None, says: str
) -> None:
    artifact, signed = model
    node = ScriptedFlasher("pump-01", **node_kw)  # type: ignore[arg-type]
    targets = {"pump-01": expected_target} if expected_target else None
    [result] = await flash_fleet([node], artifact, signed, options=FAST, expected_targets=targets)
    assert result.outcome is Outcome.REFUSED
    assert says in result.reason
    assert node.calls == ["info"]
    assert result.bytes_sent == 0


async def test_at_most_parallel_nodes_are_in_flight_and_results_keep_input_order(
    model: Model,
) -> None:
    artifact, signed = model
    in_flight: set[str] = set()
    peak = 0

    class Observer:
        def phase(self, node_id: str, text: str) -> None:
            nonlocal peak
            if text == "info":
                in_flight.add(node_id)
                peak = max(peak, len(in_flight))

        def progress(self, node_id: str, done: int, total: int) -> None:
            pass

        def finished(self, result: FlashResult) -> None:
            in_flight.discard(result.node_id)

    nodes = [ScriptedFlasher(f"pump-{i:02d}", running=running_slot()) for i in range(7, 0, -1)]
    results = await flash_fleet(
        nodes, artifact, signed, options=FlashOptions(parallel=3), observer=Observer()
    )
    assert peak == 3
    assert [r.node_id for r in results] == [n.node_id for n in nodes]
    assert all(r.outcome is Outcome.FLASHED for r in results)


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    options = FlashOptions(backoff_initial_s=0.5, backoff_max_s=4.0)
    rng = random.Random(1)
    for attempt, step in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        delays = [backoff_delay(attempt, options, rng) for _ in range(50)]
        assert all(step * 0.5 <= d <= step for d in delays)
        assert max(delays) - min(delays) > step * 0.2  # actually jittered


def test_report_is_a_list_of_flash_results_as_dicts() -> None:
    r = FlashResult("pump-01", "mqtt", Outcome.ROLLED_BACK, "1.0.0", "1.1.0", 4472, 1.5, 1, "x")
    doc = json.loads(report_json([r]))
    assert doc == [
        {
            "node_id": "pump-01",
            "transport": "mqtt",
            "outcome": "rolled_back",
            "old_version": "1.0.0",
            "new_version": "1.1.0",
            "bytes_sent": 4472,
            "seconds": 1.5,
            "attempts": 1,
            "reason": "x",
        }
    ]
    assert not all_ok([r])


def test_nominal_rates_follow_the_documented_assumptions() -> None:
    assert nominal_rate("serial", 115_200) == pytest.approx(11_520 * 0.9)
    assert nominal_rate("serial", 921_600) == pytest.approx(92_160 * 0.9)
    assert nominal_rate("smp-serial", 115_200) == pytest.approx(11_520 * 0.65)
    assert nominal_rate("smp-ble", 115_200) == 10_000
    assert nominal_rate("mqtt", 115_200) == 50_000


async def test_dry_run_reports_fit_compressed_size_and_estimated_time_without_flashing(
    model: Model,
) -> None:
    artifact, signed = model
    ok = ScriptedFlasher("pump-01", running=running_slot())
    small = ScriptedFlasher("pump-02", ram_bytes=1024, transport="mqtt")
    gone = ScriptedFlasher("pump-03", script=Script(unreachable_infos=1), transport="smp-ble")
    rows = await dry_run(
        [ok, small, gone], artifact, signed, expected_targets={"pump-03": "cortex-m0-32k"}
    )
    a, b, c = rows
    assert (a.fits_slot, a.fits_arena, a.verdict, a.budget_from) == (
        True,
        True,
        "would flash",
        "node",
    )
    assert a.compressed_bytes == len(zlib.compress(artifact, 9)) < len(artifact)
    assert a.estimated_s == pytest.approx(len(artifact) / 10_368, abs=0.01)
    assert (b.fits_arena, b.ram_bytes) == (False, 1024)
    assert b.verdict.startswith("would be refused: the model needs a 2048-byte arena")
    assert b.estimated_s == pytest.approx(len(artifact) / 50_000, abs=0.01)
    # Unreachable: judged against the inventory's target class, and says so.
    assert (c.budget_from, c.target, c.slot_bytes, c.ram_bytes) == (
        "target class",
        "cortex-m0-32k",
        64 * 1024,
        16 * 1024,
    )
    assert c.verdict.startswith("unreachable (pump-03: node unreachable")
    for node in (ok, small, gone):
        assert "upload" not in node.calls
