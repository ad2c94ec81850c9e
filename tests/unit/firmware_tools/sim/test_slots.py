"""The node's A/B model slots: verification, test boot, revert, rollback, power cuts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_tools.sim.selftest import node_self_test
from firmware_tools.sim.slots import (
    FaultHook,
    SelfTestFailed,
    SlotRefused,
    SlotStateError,
    SlotStore,
)
from gateway.protocol.manifest import ModelManifest, sha256_hex
from gateway.protocol.slots import RefusalReason
from tests.unit.firmware_tools.sim.models import (
    RAM_BYTES,
    SLOT_BYTES,
    TARGET,
    Model,
    artifact,
    padded,
    signed_model,
)

CHUNK = 1024


class PowerCut(Exception):
    """Raised by the fault hook: the node lost power before this step."""


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def v1(key: Ed25519PrivateKey) -> Model:
    return signed_model(key, 1)


@pytest.fixture(scope="module")
def v2(key: Ed25519PrivateKey) -> Model:
    return signed_model(key, 2, data=padded(artifact(), 5000))


def open_store(
    path: Path, key: Ed25519PrivateKey, fault: FaultHook | None = None, **kw: int
) -> SlotStore:
    return SlotStore.open(
        path,
        public_key=key.public_key(),
        target=TARGET,
        slot_bytes=kw.get("slot_bytes", SLOT_BYTES),
        ram_bytes=kw.get("ram_bytes", RAM_BYTES),
        fault=fault,
    )


def factory(path: Path, key: Ed25519PrivateKey, v1: Model) -> SlotStore:
    store = open_store(path, key)
    store.install_factory(v1.artifact, v1.cbor)
    return store


def send_all(store: SlotStore, model: Model, start: int = 0) -> None:
    offset = start
    while offset < len(model.artifact):
        offset = store.write(offset, model.artifact[offset : offset + CHUNK])


def always_passes(_artifact: bytes, _manifest: ModelManifest) -> None:
    return None


def always_fails(_artifact: bytes, _manifest: ModelManifest) -> None:
    raise SelfTestFailed("probe output out of range")


def active_sha(store: SlotStore) -> str | None:
    data = store.active_artifact()
    return None if data is None else sha256_hex(data)


def test_a_verified_model_passing_its_self_test_becomes_the_confirmed_active_slot(
    tmp_path: Path, key: Ed25519PrivateKey, v1: Model, v2: Model
) -> None:
    store = factory(tmp_path, key, v1)
    assert store.begin(v2.cbor) == 0
    send_all(store, v2)
    assert store.finish().sequence == 2
    assert store.boot_pending(node_self_test(RAM_BYTES)) is True

    slots = {s.slot: s for s in store.info()}
    assert slots[1].active
    assert slots[1].confirmed
    assert slots[1].sequence == 2
    assert not slots[0].active
    assert slots[0].confirmed
    assert store.active_artifact() == v2.artifact
    reopened = open_store(tmp_path, key)
    assert reopened.info() == store.info()


def test_a_model_failing_its_self_test_leaves_the_old_slot_active(
    tmp_path: Path, key: Ed25519PrivateKey, v1: Model
) -> None:
    broken = signed_model(key, 2, broken_output=True)
    store = factory(tmp_path, key, v1)
    store.begin(broken.cbor)
    send_all(store, broken)
    store.finish()
    assert store.boot_pending(node_self_test(RAM_BYTES)) is False
    assert store.active_artifact() == v1.artifact
    assert {s.slot: s.confirmed for s in store.info()} == {0: True, 1: False}
    with pytest.raises(SlotStateError):
        store.boot_pending(always_passes)  # a failed image is not booted again


def test_a_reset_during_the_test_boot_reverts_to_the_old_slot_at_the_next_boot(
    tmp_path: Path, key: Ed25519PrivateKey, v1: Model, v2: Model
) -> None:
    store = factory(tmp_path, key, v1)
    store.begin(v2.cbor)
    send_all(store, v2)
    store.finish()

    def reset_mid_test(_artifact: bytes, _manifest: ModelManifest) -> None:
        raise PowerCut

    with pytest.raises(PowerCut):
        store.boot_pending(reset_mid_test)
    rebooted = open_store(tmp_path, key)
    assert rebooted.active_artifact() == v1.artifact
    assert [s.slot for s in rebooted.info() if s.confirmed] == [0]


def test_rollback_switches_to_the_other_confirmed_slot_and_back(
    tmp_path: Path, key: Ed25519PrivateKey, v1: Model, v2: Model
) -> None:
    store = factory(tmp_path, key, v1)
    with pytest.raises(SlotStateError):
        store.rollback()  # nothing to go back to yet
    store.begin(v2.cbor)
    send_all(store, v2)
    store.finish()
    store.boot_pending(always_passes)
    assert store.rollback().sequence == 1
    assert store.active_artifact() == v1.artifact
    assert store.rollback().sequence == 2
    assert open_store(tmp_path, key).active_artifact() == v2.artifact


def test_begin_resumes_from_the_bytes_already_stored_after_a_restart(
    tmp_path: Path, key: Ed25519PrivateKey, v1: Model, v2: Model
) -> None:
    store = factory(tmp_path, key, v1)
    store.begin(v2.cbor)
    assert store.write(0, v2.artifact[:CHUNK]) == CHUNK
    assert store.write(CHUNK, v2.artifact[CHUNK : 2 * CHUNK]) == 2 * CHUNK

    restarted = open_store(tmp_path, key)
    assert restarted.begin(v2.cbor) == 2 * CHUNK
    send_all(restarted, v2, start=2 * CHUNK)
    restarted.finish()
    assert restarted.begin(v2.cbor) == len(v2.artifact)  # complete: nothing left to send


def test_out_of_order_writes_are_ignored_and_report_the_expected_offset(
    tmp_path: Path, key: Ed25519PrivateKey, v1: Model, v2: Model
) -> None:
    store = factory(tmp_path, key, v1)
    store.begin(v2.cbor)
    assert store.write(CHUNK, v2.artifact[CHUNK : 2 * CHUNK]) == 0
    assert store.write(0, v2.artifact[:CHUNK]) == CHUNK
    assert store.write(0, v2.artifact[:CHUNK]) == CHUNK
    assert store.transfer is not None
    assert store.transfer[1] == CHUNK


def test_a_new_model_for_another_transfer_restarts_from_zero(
    tmp_path: Path, key: Ed25519PrivateKey, v1: Model, v2: Model
) -> None:
    store = factory(tmp_path, key, v1)
    store.begin(v2.cbor)
    store.write(0, v2.artifact[:CHUNK])
    v3 = signed_model(key, 3)
    assert store.begin(v3.cbor) == 0


def tamper(data: bytes) -> bytes:
    return data[:100] + bytes([data[100] ^ 0x01]) + data[101:]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda k, other: b"\xa0not a manifest", RefusalReason.UNSIGNED),
        (lambda k, other: signed_model(other, 2).cbor, RefusalReason.BAD_SIGNATURE),
        (lambda k, other: _forged(signed_model(k, 2)), RefusalReason.BAD_SIGNATURE),
        (
            lambda k, other: signed_model(k, 2, target="cortex-m0-32k").cbor,
            RefusalReason.WRONG_TARGET,
        ),
        (lambda k, other: signed_model(k, 1).cbor, RefusalReason.OLD_SEQUENCE),
        (
            lambda k, other: signed_model(k, 2, arena_bytes=RAM_BYTES + 1).cbor,
            RefusalReason.NO_SPACE,
        ),
    ],
    ids=[
        "unsigned",
        "wrong-key",
        "altered-manifest",
        "wrong-class",
        "older-sequence",
        "arena-too-big",
    ],
)
def test_manifests_failing_a_check_are_refused_before_any_byte_is_written(
    tmp_path: Path,
    key: Ed25519PrivateKey,
    v1: Model,
    make: Callable[[Ed25519PrivateKey, Ed25519PrivateKey], bytes],
    reason: RefusalReason,
) -> None:
    store = factory(tmp_path, key, v1)
    before = (tmp_path / "state.cbor").read_bytes()
    with pytest.raises(SlotRefused) as refused:
        store.begin(make(key, Ed25519PrivateKey.generate()))
    assert refused.value.reason is reason
    assert (tmp_path / "state.cbor").read_bytes() == before
    assert store.transfer is None
    assert store.active_artifact() == v1.artifact


def _forged(model: Model) -> bytes:
    """The manifest re-encoded with a higher sequence, keeping the old signature."""
    import cbor2

    env = cbor2.loads(model.cbor)
    env["manifest"] = model.manifest.with_changes(sequence=99).to_cbor()
    return cbor2.dumps(env, canonical=True)


def test_a_model_larger_than_a_slot_is_refused(
    tmp_path: Path, key: Ed25519PrivateKey, v1: Model, v2: Model
) -> None:
    store = open_store(tmp_path, key, slot_bytes=len(v2.artifact) - 1)
    store.install_factory(v1.artifact, v1.cbor)
    with pytest.raises(SlotRefused) as refused:
        store.begin(v2.cbor)
    assert refused.value.reason is RefusalReason.NO_SPACE


def test_tampered_bytes_are_refused_at_finish_and_discarded(
    tmp_path: Path, key: Ed25519PrivateKey, v1: Model, v2: Model
) -> None:
    store = factory(tmp_path, key, v1)
    store.begin(v2.cbor)
    bad = Model(tamper(v2.artifact), v2.signed)
    send_all(store, bad)
    with pytest.raises(SlotRefused) as refused:
        store.finish()
    assert refused.value.reason is RefusalReason.BAD_HASH
    assert store.active_artifact() == v1.artifact
    assert store.begin(v2.cbor) == 0  # nothing of the bad image is resumed


def _flash_steps(store: SlotStore, v2: Model) -> None:
    offset = store.begin(v2.cbor)
    send_all(store, v2, start=offset)
    store.finish()
    store.boot_pending(always_passes)


def _count_steps(tmp_path: Path, key: Ed25519PrivateKey, v1: Model, v2: Model) -> int:
    steps: list[str] = []
    factory(tmp_path, key, v1)
    _flash_steps(open_store(tmp_path, key, fault=steps.append), v2)
    return len(steps)


def test_a_power_cut_at_any_write_step_leaves_the_old_or_the_new_model_and_the_flash_completes(
    tmp_path: Path, key: Ed25519PrivateKey, v1: Model, v2: Model
) -> None:
    n_steps = _count_steps(tmp_path / "count", key, v1, v2)
    assert n_steps >= 10  # state commits, chunk writes, truncation
    outcomes = set()
    for cut_at in range(n_steps):
        node = tmp_path / f"cut-{cut_at}"
        factory(node, key, v1)
        seen = 0

        def fault(_step: str, cut_at: int = cut_at) -> None:
            nonlocal seen
            if seen == cut_at:
                raise PowerCut
            seen += 1

        with pytest.raises(PowerCut):
            _flash_steps(open_store(node, key, fault=fault), v2)

        rebooted = open_store(node, key)
        running = active_sha(rebooted)
        assert running in (v1.manifest.sha256, v2.manifest.sha256), f"cut at step {cut_at}"
        outcomes.add(running)
        manifest = rebooted.active_manifest()
        assert manifest is not None
        assert manifest.sha256 == running
        if running == v1.manifest.sha256:
            _flash_steps(rebooted, v2)  # the next attempt finishes the job
        assert active_sha(open_store(node, key)) == v2.manifest.sha256
    # Every durable step precedes the final commit, so every cut leaves the old model running.
    assert outcomes == {v1.manifest.sha256}


def test_the_factory_image_must_verify_against_the_fleet_key(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    foreign = signed_model(Ed25519PrivateKey.generate(), 1)
    store = open_store(tmp_path, key)
    with pytest.raises(Exception, match="key"):
        store.install_factory(foreign.artifact, foreign.cbor)
    assert store.info() == ()
