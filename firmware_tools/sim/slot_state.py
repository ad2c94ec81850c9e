"""The slot store's durable state: which slot is active or on trial, and each slot's manifest.

Written as one canonical CBOR file by :class:`firmware_tools.sim.slots.SlotStore`, replaced
atomically (temp file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from gateway.protocol.manifest import ModelManifest
from gateway.protocol.signed_manifest import SignedManifest

STATE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Slot:
    signed_cbor: bytes  # the signed manifest envelope as received
    state: str  # "staging" (being written), "ready" (verified, not booted), "confirmed", "failed"

    @property
    def signed(self) -> SignedManifest:
        return SignedManifest.from_cbor(self.signed_cbor)

    @property
    def manifest(self) -> ModelManifest:
        return self.signed.manifest


@dataclass(frozen=True, slots=True)
class SlotState:
    active: int | None
    trial: int | None  # slot booted in test mode and not yet confirmed
    slots: tuple[Slot | None, Slot | None]

    def to_cbor(self) -> bytes:
        return cbor2.dumps(
            {
                "format": STATE_FORMAT,
                "active": self.active,
                "trial": self.trial,
                "slots": [
                    None if s is None else {"manifest": s.signed_cbor, "state": s.state}
                    for s in self.slots
                ],
            },
            canonical=True,
        )

    @classmethod
    def from_cbor(cls, data: bytes) -> SlotState:
        doc: dict[str, Any] = cbor2.loads(data)
        slots = tuple(
            None if s is None else Slot(bytes(s["manifest"]), str(s["state"])) for s in doc["slots"]
        )
        assert len(slots) == 2
        return cls(doc["active"], doc["trial"], (slots[0], slots[1]))

    def with_slot(self, index: int, slot: Slot | None) -> SlotState:
        slots = list(self.slots)
        slots[index] = slot
        return SlotState(self.active, self.trial, (slots[0], slots[1]))


EMPTY_STATE = SlotState(active=None, trial=None, slots=(None, None))


def fsync_dir(directory: Path) -> None:
    # The rename itself is only durable once the directory entry is.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
