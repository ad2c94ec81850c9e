"""The node's SMP (MCUmgr) profile: which image is the model, where the manifest and the slot
report live, and how each refusal is reported (docs/flash-model.md, "SMP (MCUmgr)").

Shared by the node (the simulator's SMP server) and the host (``flash-model``'s SMP flasher),
so the two cannot drift apart. Codes are the ``smp`` package's enums.
"""

from __future__ import annotations

from smp import image_management as smpimg
from smp.error import MGMT_ERR

from gateway.protocol.slots import RefusalReason

FIRMWARE_IMAGE = 0
MODEL_IMAGE = 1
MANIFEST_PATH = "/model/manifest.cbor"
INFO_PATH = "/model/info.cbor"
MAX_MANIFEST_BYTES = 8192
DEFAULT_BUF_SIZE = 2048  # the node's SMP reassembly buffer (CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE)
DEFAULT_BUF_COUNT = 2

_IMG = smpimg.IMG_MGMT_ERR
REFUSAL_CODES: dict[RefusalReason, smpimg.IMG_MGMT_ERR] = {
    RefusalReason.UNSIGNED: _IMG.NO_TLVS,  # no signed manifest, as an image without TLVs
    RefusalReason.BAD_SIGNATURE: _IMG.INVALID_TLV,  # the signature "TLV" does not verify
    RefusalReason.BAD_HASH: _IMG.INVALID_HASH,
    RefusalReason.OLD_SEQUENCE: _IMG.CURRENT_VERSION_IS_NEWER,
    RefusalReason.WRONG_TARGET: _IMG.INVALID_FLASH_ADDRESS,  # built for another memory map
    RefusalReason.NO_SPACE: _IMG.INVALID_IMAGE_TOO_LARGE,
    RefusalReason.BUSY: _IMG.IMAGE_ALREADY_PENDING,  # the store is self-testing a model
    RefusalReason.SELF_TEST_FAILED: _IMG.IMAGE_CONFIRMATION_DENIED,
}
"""SMP v2 image-group code for each refusal; one-to-one, so a host maps it back."""

REFUSAL_CODES_V1: dict[RefusalReason, MGMT_ERR] = {
    RefusalReason.UNSIGNED: MGMT_ERR.ENOENT,
    RefusalReason.BAD_SIGNATURE: MGMT_ERR.EACCESSDENIED,
    RefusalReason.BAD_HASH: MGMT_ERR.ECORRUPT,
    RefusalReason.OLD_SEQUENCE: MGMT_ERR.EBADSTATE,
    RefusalReason.WRONG_TARGET: MGMT_ERR.ENOTSUP,
    RefusalReason.NO_SPACE: MGMT_ERR.ENOMEM,
    RefusalReason.BUSY: MGMT_ERR.EBUSY,
    RefusalReason.SELF_TEST_FAILED: MGMT_ERR.EUNKNOWN,
}
"""SMP v1 (``rc`` + ``rsn``) code for each refusal, for v1-only tools such as old mcumgr."""
