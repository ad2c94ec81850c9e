"""The sans-IO SMP server, driven with the ``smp`` package's request models (no transport)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from smp import error as smperr
from smp import file_management as smpfs
from smp import header as smphdr
from smp import image_management as smpimg
from smp import os_management as smpos

from firmware_tools.sim.smp_server import SmpServer
from gateway.protocol.slots import RefusalReason
from gateway.protocol.smp_profile import (
    INFO_PATH,
    MANIFEST_PATH,
    MODEL_IMAGE,
    REFUSAL_CODES,
    REFUSAL_CODES_V1,
)
from tests.unit.firmware_tools.sim.support import Model, make_model, make_server


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def server(tmp_path: Path, key: Ed25519PrivateKey) -> SmpServer:
    return make_server(tmp_path, key, make_model(key, 1))


def _send_manifest(server: SmpServer, model: Model) -> None:
    envelope = model.signed.to_cbor()
    reply = server.handle(
        smpfs.FileUploadRequest(name=MANIFEST_PATH, off=0, data=envelope, len=len(envelope)).BYTES
    )
    assert smpfs.FileUploadResponse.loads(reply.response).off == len(envelope)


def _upload(server: SmpServer, model: Model, off: int, data: bytes) -> bytes:
    first = (
        {"len": len(model.artifact), "image": MODEL_IMAGE, "sha": model.sha256} if off == 0 else {}
    )
    return server.handle(smpimg.ImageUploadWriteRequest(off=off, data=data, **first).BYTES).response


def test_responses_echo_the_request_sequence_and_answer_with_the_response_op(
    server: SmpServer,
) -> None:
    request = smpos.EchoWriteRequest(d="hello", sequence=77)
    response = smpos.EchoWriteResponse.loads(server.handle(request.BYTES).response)
    assert response.r == "hello"
    assert response.header.sequence == 77
    assert response.header.op == smphdr.OP.WRITE_RSP


def test_mcumgr_parameters_report_the_reassembly_buffer(server: SmpServer) -> None:
    reply = server.handle(smpos.MCUMgrParametersReadRequest().BYTES)
    params = smpos.MCUMgrParametersReadResponse.loads(reply.response)
    assert (params.buf_size, params.buf_count) == (server.buf_size, server.buf_count)


def test_image_list_shows_firmware_as_image_0_and_the_model_slots_as_image_1(
    server: SmpServer,
) -> None:
    states = smpimg.ImageStatesReadResponse.loads(
        server.handle(smpimg.ImageStatesReadRequest().BYTES).response
    )
    firmware, model = states.images
    assert (firmware.image, firmware.active) == (0, True)
    assert (model.image, model.slot, model.version) == (MODEL_IMAGE, 0, "1.1.0")
    assert model.hash == hashlib.sha256(server.store.active_artifact() or b"").digest()
    assert (model.active, model.confirmed, model.pending) == (True, True, None)


def test_upload_in_chunks_then_test_and_reset_confirms_the_new_model(
    server: SmpServer, key: Ed25519PrivateKey
) -> None:
    new = make_model(key, 2)
    _send_manifest(server, new)
    off = 0
    while off < len(new.artifact):
        response = smpimg.ImageUploadWriteResponse.loads(
            _upload(server, new, off, new.artifact[off : off + 1000])
        )
        assert response.off is not None
        off = response.off
    assert response.match is True
    state = server.handle(smpimg.ImageStatesWriteRequest(hash=new.sha256, confirm=False).BYTES)
    pending = smpimg.ImageStatesWriteResponse.loads(state.response).images[-1]
    assert (pending.slot, pending.pending, pending.active) == (1, True, None)
    reset = server.handle(smpos.ResetWriteRequest().BYTES)
    assert reset.reset
    assert server.reboot() is True
    assert server.store.active_artifact() == new.artifact


def test_a_chunk_at_an_unexpected_offset_is_answered_with_the_expected_one(
    server: SmpServer, key: Ed25519PrivateKey
) -> None:
    new = make_model(key, 2)
    _send_manifest(server, new)
    _upload(server, new, 0, new.artifact[:100])
    skipped = smpimg.ImageUploadWriteResponse.loads(_upload(server, new, 500, b"x" * 100))
    assert skipped.off == 100
    again = smpimg.ImageUploadWriteResponse.loads(_upload(server, new, 0, new.artifact[:100]))
    assert again.off == 100  # a new session for the same model resumes; its data is dropped


def test_refusals_are_v2_group_errors_for_v2_requests(
    server: SmpServer, key: Ed25519PrivateKey
) -> None:
    old = make_model(key, 1, pad=48)
    _send_manifest(server, old)
    error = smpimg.ImageManagementErrorV2.loads(_upload(server, old, 0, b""))
    assert error.err.group == smphdr.GroupId.IMAGE_MANAGEMENT
    assert error.err.rc == REFUSAL_CODES[RefusalReason.OLD_SEQUENCE]


def test_refusals_carry_a_readable_reason_for_v1_requests(
    server: SmpServer, key: Ed25519PrivateKey
) -> None:
    wrong = make_model(key, 2, target="esp32-s3")
    _send_manifest(server, wrong)
    request = smpimg.ImageUploadWriteRequest(
        off=0,
        data=b"",
        len=len(wrong.artifact),
        image=MODEL_IMAGE,
        sha=wrong.sha256,
        version=smphdr.Version.V1,
    )
    error = smpimg.ImageManagementErrorV1.loads(server.handle(request.BYTES).response)
    assert error.rc == REFUSAL_CODES_V1[RefusalReason.WRONG_TARGET]
    assert error.rsn is not None
    assert error.rsn.startswith("wrong_target: model is built for esp32-s3")


def test_confirming_an_untested_model_is_denied(server: SmpServer, key: Ed25519PrivateKey) -> None:
    new = make_model(key, 2)
    _send_manifest(server, new)
    _upload(server, new, 0, new.artifact)
    denied = smpimg.ImageManagementErrorV2.loads(
        server.handle(smpimg.ImageStatesWriteRequest(hash=new.sha256, confirm=True).BYTES).response
    )
    assert denied.err.rc == REFUSAL_CODES[RefusalReason.SELF_TEST_FAILED]
    assert server.reboot() is None  # nothing pending
    assert server.store.active_artifact() != new.artifact


def test_info_file_reports_target_sizes_and_slots(server: SmpServer) -> None:
    reply = server.handle(smpfs.FileDownloadRequest(name=INFO_PATH, off=0).BYTES)
    download = smpfs.FileDownloadResponse.loads(reply.response)
    assert download.len == len(download.data)
    info = cbor2.loads(download.data)
    assert info["node_id"] == "pump-01"
    assert info["target"] == server.store.target
    assert [(s["slot"], s["sequence"], s["active"]) for s in info["slots"]] == [(0, 1, True)]


def test_unsupported_and_malformed_requests_get_errors_not_exceptions(server: SmpServer) -> None:
    stats = smpos.TaskStatisticsReadRequest()
    unsupported = smpos.OSManagementErrorV1.loads(server.handle(stats.BYTES).response)
    assert unsupported.rc == smperr.MGMT_ERR.ENOTSUP
    garbage = bytes(smpos.EchoWriteRequest(d="x").header) + b"\xff\xfe"
    malformed = smpos.OSManagementErrorV1.loads(server.handle(garbage).response)
    assert malformed.rc == smperr.MGMT_ERR.EINVAL
    assert server.handle(b"\x02").response == b""


def test_a_model_that_failed_its_self_test_is_listed_but_not_bootable(
    server: SmpServer, key: Ed25519PrivateKey
) -> None:
    broken = make_model(key, 2, bad_output_shape=True)
    _send_manifest(server, broken)
    _upload(server, broken, 0, broken.artifact)
    server.handle(smpimg.ImageStatesWriteRequest(hash=broken.sha256, confirm=False).BYTES)
    assert server.handle(smpos.ResetWriteRequest().BYTES).reset
    assert server.reboot() is False
    states = smpimg.ImageStatesReadResponse.loads(
        server.handle(smpimg.ImageStatesReadRequest().BYTES).response
    )
    old, failed = states.images[1:]
    assert (old.active, old.confirmed, old.bootable) == (True, True, True)
    assert (failed.hash, failed.active, failed.bootable) == (broken.sha256, None, None)


def test_a_new_upload_clears_a_test_mark_left_by_an_interrupted_run(
    server: SmpServer, key: Ed25519PrivateKey
) -> None:
    first, second = make_model(key, 2), make_model(key, 3)
    _send_manifest(server, first)
    _upload(server, first, 0, first.artifact)
    server.handle(smpimg.ImageStatesWriteRequest(hash=first.sha256, confirm=False).BYTES)
    _send_manifest(server, second)
    started = smpimg.ImageUploadWriteResponse.loads(_upload(server, second, 0, b""))
    assert started.off == 0
    assert server.reboot() is None  # the mark went with the model it pointed at
    assert server.store.active_manifest() is not None
    assert server.store.active_manifest().sequence == 1  # type: ignore[union-attr]
