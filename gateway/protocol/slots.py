"""A node's model slots as the node reports them, and why a node refuses a model.

Every transfer path speaks these: the binary transfer (:mod:`gateway.protocol.xfer`), SMP
(:mod:`gateway.protocol.smp_profile`) and MQTT; the node side (A/B slots, verification, test
boot, self-test, automatic revert) is specified in ``docs/protocol.md``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.protocol.messages import SlotInfo


class RefusalReason(enum.StrEnum):
    """Why a node refused a model. The node checks all of these itself; flash-model checks
    what it can before sending, to fail early with a clearer message."""

    BAD_SIGNATURE = "bad_signature"  # not signed by the fleet key, or altered after signing
    UNSIGNED = "unsigned"  # no signed manifest at all
    BAD_HASH = "bad_hash"  # the bytes received do not hash to the manifest's sha256/size
    OLD_SEQUENCE = "old_sequence"  # sequence not strictly greater than the running model's
    WRONG_TARGET = "wrong_target"  # built for another target class
    NO_SPACE = "no_space"  # larger than a slot, or its arena does not fit the node's RAM
    SELF_TEST_FAILED = "self_test_failed"  # booted in test mode, failed, reverted
    BUSY = "busy"  # another transfer is in progress on the node


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a node reports about its model slots (``flash-model info``)."""

    node_id: str
    target: str  # the node's target class, a manifest.TARGET_CLASSES key
    slot_bytes: int
    ram_bytes: int
    slots: tuple[SlotInfo, ...]
    # How flash-model reaches the model on this node (MCUmgr nodes: "stock fs group
    # (sha256); groups ...; buf 1024 x 4"); empty for transports with one way only.
    path: str = ""

    @property
    def active(self) -> SlotInfo | None:
        return next((s for s in self.slots if s.active), None)
