"""The contract between ``flash-model``'s orchestration and its transports.

One :class:`NodeFlasher` talks to one node over one transport (our binary serial transfer,
SMP over serial or BLE, or MQTT through the site broker). The orchestrator
(:mod:`firmware_tools.flash.orchestrate`) runs many of them in parallel, shows progress,
retries with resume and writes the report; it never knows which wire it is on.

The node side (A/B slots, verification, test boot, self-test, automatic revert) is specified in
``docs/protocol.md`` and simulated in :mod:`firmware_tools.sim.slots`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import FlashError
from gateway.protocol.signed_manifest import SignedManifest
from gateway.protocol.slots import NodeInfo, RefusalReason

ProgressCallback = Callable[[int, int], None]
"""``progress(bytes_done, bytes_total)``; called from the event loop, must not block."""


class Outcome(enum.StrEnum):
    FLASHED = "flashed"  # new model confirmed by the node after its self-test
    ALREADY_CURRENT = "already_current"  # the node already runs this exact model
    REFUSED = "refused"  # the node (or pre-flight check) refused it; see reason
    ROLLED_BACK = "rolled_back"  # accepted, booted in test mode, failed self-test, reverted
    UNREACHABLE = "unreachable"
    FAILED = "failed"  # transfer kept failing after the retries


@dataclass(frozen=True, slots=True)
class FlashResult:
    node_id: str
    transport: str
    outcome: Outcome
    old_version: str | None
    new_version: str
    bytes_sent: int  # this run, including resends; resume makes this < the model size
    seconds: float
    attempts: int
    reason: str = ""  # human message: what went wrong and what to do


class NodeRefused(FlashError):
    """The node refused the model; ``reason`` says which check failed."""

    def __init__(self, node_id: str, reason: RefusalReason, detail: str = "") -> None:
        super().__init__(
            f"{node_id}: node refused the model ({reason.value}){': ' + detail if detail else ''}"
        )
        self.node_id = node_id
        self.reason = reason


class NodeUnreachable(FlashError):
    def __init__(self, node_id: str, detail: str) -> None:
        super().__init__(f"{node_id}: node unreachable: {detail}")
        self.node_id = node_id


class NodeFlasher(Protocol):
    """One node over one transport. Implementations raise :class:`NodeUnreachable` when the
    node does not answer (after their own short timeout), :class:`NodeRefused` when it says
    no, and :class:`FlashError` for anything else the orchestrator may retry."""

    @property
    def node_id(self) -> str: ...

    @property
    def transport(self) -> str: ...  # "serial", "smp-serial", "smp-ble", "mqtt"

    async def info(self) -> NodeInfo: ...

    async def upload(
        self, artifact: bytes, signed: SignedManifest, progress: ProgressCallback
    ) -> int:
        """Send model and signed manifest into the node's inactive slot, resuming from the
        offset the node reports; return the bytes sent by this call. When it returns, the
        node holds the complete image and has verified it (or raised NodeRefused)."""
        ...

    async def activate(self, timeout_s: float) -> NodeInfo:
        """Boot the uploaded slot in test mode and wait for the node's self-test verdict.
        Returns the node's slots afterwards: the new slot active and confirmed, or raises
        NodeRefused(SELF_TEST_FAILED) when the node reverted to its old slot."""
        ...

    async def rollback(self) -> NodeInfo:
        """Make the other (previous, confirmed) slot active again."""
        ...

    async def aclose(self) -> None: ...
