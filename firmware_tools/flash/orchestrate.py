"""Flash one model onto many nodes in parallel: pre-flight, upload with retries, activate.

Per node, every attempt runs ``info`` → pre-flight checks → ``upload`` → ``activate``. The
pre-flight checks repeat what the node will check (target class, sequence newer than the
running model, fits the slot and the arena) so a hopeless transfer fails in a second with a
message saying what to do, not after a minute of upload. A failed attempt (transport error,
node unreachable, node busy) waits with exponential backoff and starts over from ``info``;
the flasher then resumes the upload from the offset the node reports, so a retry sends only
what is missing. Starting over from ``info`` also settles what an interrupted ``activate``
left behind: the node runs either the new model (done) or the old one (activate again).

Nothing here knows which wire a node is on: it drives :class:`~firmware_tools.flash.api.
NodeFlasher` objects and reports to a :class:`FlashObserver` (the CLI's progress bars).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from firmware_tools.flash.api import FlashResult, NodeFlasher, NodeRefused, NodeUnreachable, Outcome
from firmware_tools.flash.inventory import Transport
from gateway.errors import FlashError
from gateway.protocol.manifest import TARGET_CLASSES, ModelManifest
from gateway.protocol.signed_manifest import SignedManifest
from gateway.protocol.slots import NodeInfo, RefusalReason
from gateway.retry import Backoff

_LOGGER = logging.getLogger(__name__)

OK_OUTCOMES = frozenset({Outcome.FLASHED, Outcome.ALREADY_CURRENT})


@dataclass(frozen=True, slots=True)
class FlashOptions:
    retries: int = 3  # further attempts after the first, per node
    parallel: int = 4  # nodes in flight at once
    activate_timeout_s: float = 60.0  # test boot + self-test verdict
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.parallel < 1:
            raise ValueError("retries must be >= 0 and parallel >= 1")


class FlashObserver(Protocol):
    """What the orchestrator tells the outside (progress bars); methods must not block."""

    def phase(self, node_id: str, text: str) -> None: ...

    def progress(self, node_id: str, done: int, total: int) -> None: ...

    def finished(self, result: FlashResult) -> None: ...


class NullObserver:
    def phase(self, node_id: str, text: str) -> None:
        pass

    def progress(self, node_id: str, done: int, total: int) -> None:
        pass

    def finished(self, result: FlashResult) -> None:
        pass


# -- pre-flight ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What pre-flight decided: go ahead (``outcome`` None), or stop with this outcome."""

    outcome: Outcome | None
    reason: str = ""
    refusal: RefusalReason | None = None


def model_hash(manifest: ModelManifest) -> bytes:
    """The 8-byte hash prefix nodes report in :class:`~gateway.protocol.messages.SlotInfo`."""
    return bytes.fromhex(manifest.sha256)[:8]


def preflight(info: NodeInfo, manifest: ModelManifest, expected_target: str | None) -> Verdict:
    """Decide from the node's own report whether sending ``manifest``'s model can succeed."""
    active = info.active
    if active is not None and active.model_hash == model_hash(manifest):
        if active.confirmed:
            return Verdict(
                Outcome.ALREADY_CURRENT, f"already runs {manifest.name} {manifest.version}"
            )
        return Verdict(
            Outcome.FAILED,
            "the node runs this model in test mode and has not given its self-test verdict yet; "
            "wait a minute and look with `flash-model info`",
            RefusalReason.BUSY,
        )
    if expected_target is not None and expected_target != info.target:
        return Verdict(
            Outcome.REFUSED,
            f"the inventory says target {expected_target} but the node reports {info.target}; "
            "fix the node's entry in the inventory (or check that this is the right node)",
            RefusalReason.WRONG_TARGET,
        )
    if manifest.target != info.target:
        return Verdict(
            Outcome.REFUSED,
            f"the model is built for {manifest.target} but the node is {info.target}; convert "
            f"and sign it with --target {info.target}, or leave this node out",
            RefusalReason.WRONG_TARGET,
        )
    if active is not None and manifest.sequence <= active.sequence:
        return Verdict(
            Outcome.REFUSED,
            f"the model's sequence {manifest.sequence} is not above the {active.sequence} the "
            f"node runs ({active.model_id} {active.model_version}); re-sign it with "
            f"`flash-model sign --sequence {active.sequence + 1}`",
            RefusalReason.OLD_SEQUENCE,
        )
    if manifest.size_bytes > info.slot_bytes:
        return Verdict(
            Outcome.REFUSED,
            f"the model is {manifest.size_bytes} bytes but a slot holds {info.slot_bytes}; "
            "shrink the model (fewer or narrower layers)",
            RefusalReason.NO_SPACE,
        )
    if manifest.arena_bytes > info.ram_bytes:
        return Verdict(
            Outcome.REFUSED,
            f"the model needs a {manifest.arena_bytes}-byte arena but the node has "
            f"{info.ram_bytes} bytes of RAM for it; shrink the model's activations",
            RefusalReason.NO_SPACE,
        )
    return Verdict(None)


_REFUSAL_ADVICE: dict[RefusalReason, str] = {
    RefusalReason.BAD_SIGNATURE: "sign the model with the fleet key the node trusts and check it "
    "with `flash-model verify --pubkey` (the fleet's public key)",
    RefusalReason.UNSIGNED: "sign the model with `flash-model sign`",
    RefusalReason.BAD_HASH: "the bytes the node stored do not match the manifest; check that "
    "the model file is the one that was signed (`flash-model verify`) and run again",
    RefusalReason.OLD_SEQUENCE: "re-sign the model with a higher --sequence",
    RefusalReason.WRONG_TARGET: "convert and sign the model for the node's target class",
    RefusalReason.NO_SPACE: "the model or its arena does not fit the node; shrink the model",
    RefusalReason.SELF_TEST_FAILED: "the node runs its previous model again; check this one "
    "with `flash-model info-model` (it must load in TFLM and give sane output)",
    RefusalReason.BUSY: "another transfer is in progress on the node; wait for it to end",
}


def refusal_message(exc: NodeRefused) -> str:
    return f"{exc} — {_REFUSAL_ADVICE[exc.reason]}"


def backoff_delay(attempt: int, options: FlashOptions, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed ``attempt`` (1-based): doubling, capped, with jitter.

    Jitter (50-100 % of the step) keeps nodes that failed together (a broker restart) from
    retrying in lockstep.
    """
    return Backoff(options.backoff_initial_s, options.backoff_max_s, rng=rng).delay(attempt - 1)


# -- one node -----------------------------------------------------------------------------


class _NodeRun:
    """The attempts of one node, with the bookkeeping its FlashResult needs."""

    def __init__(
        self,
        flasher: NodeFlasher,
        *,
        artifact: bytes,
        signed: SignedManifest,
        options: FlashOptions,
        observer: FlashObserver,
        expected_target: str | None,
    ) -> None:
        self.flasher = flasher
        self.artifact = artifact
        self.signed = signed
        self.options = options
        self.observer = observer
        self.expected_target = expected_target
        self.node_id = flasher.node_id
        self.old_version: str | None = None
        self.bytes_sent = 0
        self.attempts = 0
        self.changed_node = False  # this run activated something on the node
        self._first_done: int | None = None
        self._last_done = 0

    def _progress(self, done: int, total: int) -> None:
        if self._first_done is None:
            self._first_done = done
        self._last_done = done
        self.observer.progress(self.node_id, done, total)

    def _result(self, outcome: Outcome, started: float, reason: str = "") -> FlashResult:
        result = FlashResult(
            node_id=self.node_id,
            transport=self.flasher.transport,
            outcome=outcome,
            old_version=self.old_version,
            new_version=self.signed.manifest.version,
            bytes_sent=self.bytes_sent,
            seconds=round(asyncio.get_running_loop().time() - started, 3),
            attempts=self.attempts,
            reason=reason,
        )
        self.observer.finished(result)
        return result

    async def _wait_before_retry(self, attempt: int, last_error: FlashError | None) -> None:
        delay = backoff_delay(attempt - 1, self.options)
        self.observer.phase(self.node_id, f"retry {attempt - 1} in {delay:.1f} s")
        _LOGGER.info(
            "%s: attempt %d failed (%s); retry in %.1f s",
            self.node_id,
            attempt - 1,
            last_error,
            delay,
        )
        await asyncio.sleep(delay)

    async def _attempt(self, started: float) -> FlashResult:
        """One attempt: info, pre-flight, upload (resuming), activate. Raises FlashError."""
        self.observer.phase(self.node_id, "info")
        info = await self.flasher.info()
        if self.old_version is None and info.active is not None:
            self.old_version = info.active.model_version
        verdict = preflight(info, self.signed.manifest, self.expected_target)
        if verdict.outcome is Outcome.ALREADY_CURRENT and self.changed_node:
            # An earlier attempt's activate went through before its link dropped.
            return self._result(Outcome.FLASHED, started)
        if verdict.refusal is RefusalReason.BUSY:
            raise NodeRefused(self.node_id, RefusalReason.BUSY, verdict.reason)
        if verdict.outcome is not None:
            return self._result(verdict.outcome, started, verdict.reason)
        self.observer.phase(self.node_id, "upload")
        self._first_done = None
        try:
            self.bytes_sent += await self.flasher.upload(self.artifact, self.signed, self._progress)
        except FlashError:
            # The call never returned its count: estimate it from the progress seen.
            if self._first_done is not None:
                self.bytes_sent += max(0, self._last_done - self._first_done)
            raise
        self.observer.phase(self.node_id, "activate")
        self.changed_node = True
        await self.flasher.activate(self.options.activate_timeout_s)
        return self._result(Outcome.FLASHED, started)

    async def run(self) -> FlashResult:
        started = asyncio.get_running_loop().time()
        last_error: FlashError | None = None
        for attempt in range(1, self.options.retries + 2):
            self.attempts = attempt
            if attempt > 1:
                await self._wait_before_retry(attempt, last_error)
            try:
                return await self._attempt(started)
            except NodeRefused as exc:
                if exc.reason is RefusalReason.BUSY:
                    last_error = exc
                    continue
                outcome = (
                    Outcome.ROLLED_BACK
                    if exc.reason is RefusalReason.SELF_TEST_FAILED
                    else Outcome.REFUSED
                )
                return self._result(outcome, started, refusal_message(exc))
            except FlashError as exc:
                last_error = exc
                # issue 15: an error code no retry can change (FILE_NOT_FOUND, bad header)
                if getattr(exc, "permanent", False):
                    return self._result(Outcome.FAILED, started, f"{exc} (permanent: not retried)")
            except OSError as exc:
                # issue 15: a port that vanishes or a node that resets mid-request is this
                # node's failure (retried, resuming), never the fleet run's.
                last_error = NodeUnreachable(self.node_id, f"link error: {exc}")
        assert last_error is not None
        tries = f"after {self.attempts} attempt{'s' if self.attempts > 1 else ''}"
        if isinstance(last_error, NodeUnreachable):
            return self._result(
                Outcome.UNREACHABLE,
                started,
                f"{last_error} ({tries}) — check that the node is powered and in reach (cable, "
                "port, BLE range, broker URL and site), then run again: transfers resume",
            )
        if isinstance(last_error, NodeRefused):
            return self._result(Outcome.FAILED, started, f"{refusal_message(last_error)} ({tries})")
        return self._result(
            Outcome.FAILED,
            started,
            f"{last_error} ({tries}) — run again to resume, or raise --retries",
        )


async def flash_fleet(
    flashers: Sequence[NodeFlasher],
    artifact: bytes,
    signed: SignedManifest,
    *,
    options: FlashOptions | None = None,
    observer: FlashObserver | None = None,
    expected_targets: Mapping[str, str] | None = None,
) -> list[FlashResult]:
    """Flash ``artifact`` onto every node, at most ``options.parallel`` at a time.

    Returns one :class:`FlashResult` per flasher, in the order given. Expected failures
    (refusals, unreachable nodes, transfers failing after the retries) become results;
    anything else is a bug and propagates. ``expected_targets`` maps node ids to the target
    class the inventory declares. The caller owns (and closes) the flashers.
    """
    ids = [f.node_id for f in flashers]
    if len(set(ids)) != len(ids):
        raise ValueError(f"node ids must be unique, got {ids}")
    options = options or FlashOptions()
    observer = observer or NullObserver()
    expected_targets = expected_targets or {}
    gate = asyncio.Semaphore(options.parallel)
    results: dict[str, FlashResult] = {}

    async def one(flasher: NodeFlasher) -> None:
        async with gate:
            run = _NodeRun(
                flasher,
                artifact=artifact,
                signed=signed,
                options=options,
                observer=observer,
                expected_target=expected_targets.get(flasher.node_id),
            )
            results[flasher.node_id] = await run.run()

    async with asyncio.TaskGroup() as tg:
        for flasher in flashers:
            observer.phase(flasher.node_id, "queued")
            tg.create_task(one(flasher), name=f"flash:{flasher.transport}:{flasher.node_id}")
    return [results[f.node_id] for f in flashers]


def all_ok(results: Sequence[FlashResult]) -> bool:
    return all(r.outcome in OK_OUTCOMES for r in results)


def result_to_dict(result: FlashResult) -> dict[str, Any]:
    doc = dataclasses.asdict(result)
    doc["outcome"] = result.outcome.value
    return doc


def report_json(results: Sequence[FlashResult]) -> str:
    """The JSON report: a list of FlashResult objects, field for field."""
    return json.dumps([result_to_dict(r) for r in results], indent=2) + "\n"


# -- dry run ------------------------------------------------------------------------------

SERIAL_FRAMING_EFFICIENCY = 0.9
# Assumed, not measured on every link: see docs/flash-model.md, "Estimated times".
SMP_SERIAL_EFFICIENCY = 0.65  # base64 (3/4) x console framing; bench.flash measures ~0.68
SMP_BLE_BYTES_PER_S = 10_000.0  # 1M PHY, 244-byte MTU, one write + notify per chunk
MQTT_BYTES_PER_S = 50_000.0  # Wi-Fi node via the site broker, acknowledged chunks


def nominal_rate(transport: str, baud: int) -> float:
    """Model bytes per second a transport is assumed to move (for estimates only)."""
    line = baud / 10  # 8N1: ten bits on the wire per byte
    match Transport(transport):
        case Transport.SERIAL:
            return line * SERIAL_FRAMING_EFFICIENCY
        case Transport.SMP_SERIAL:
            return line * SMP_SERIAL_EFFICIENCY
        case Transport.SMP_BLE:
            return SMP_BLE_BYTES_PER_S
        case Transport.MQTT:
            return MQTT_BYTES_PER_S


@dataclass(frozen=True, slots=True)
class DryRunRow:
    node_id: str
    transport: str
    target: str
    budget_from: str  # "node" (it answered info) or "target class" (it did not)
    slot_bytes: int
    ram_bytes: int
    model_bytes: int
    arena_bytes: int
    fits_slot: bool
    fits_arena: bool
    compressed_bytes: int  # zlib -9 of the artifact; informational, transfers send it raw
    rate_bytes_per_s: float
    estimated_s: float
    verdict: str  # "would flash", or why it would not
    path: str = ""  # issue 15: how the model would reach the node (MCUmgr capabilities)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compressed_size(artifact: bytes) -> int:
    return len(zlib.compress(artifact, 9))


async def dry_run(
    flashers: Sequence[NodeFlasher],
    artifact: bytes,
    signed: SignedManifest,
    *,
    baud: int = 115_200,
    parallel: int = 4,
    expected_targets: Mapping[str, str] | None = None,
) -> list[DryRunRow]:
    """Per node: does the model fit, how long would it take, would the node take it.

    Asks each node for ``info`` (read-only, one try); a node that does not answer is judged
    against its declared target class (else the model's) and its verdict says so.
    """
    manifest = signed.manifest
    expected_targets = expected_targets or {}
    compressed = compressed_size(artifact)
    gate = asyncio.Semaphore(parallel)
    rows: dict[str, DryRunRow] = {}

    async def one(flasher: NodeFlasher) -> None:
        expected = expected_targets.get(flasher.node_id)
        async with gate:
            answered = False  # issue 15: "answered but cannot take a model" vs "unreachable"
            try:
                info: NodeInfo | None = await flasher.info()
                error = ""
            except NodeUnreachable as exc:
                info, error = None, str(exc)
            except (FlashError, OSError) as exc:
                info, error, answered = None, str(exc), not isinstance(exc, OSError)
        if info is not None:
            target, slot, ram, budget_from = info.target, info.slot_bytes, info.ram_bytes, "node"
            v = preflight(info, manifest, expected)
            if v.outcome is None:
                verdict = "would flash"
            elif v.outcome is Outcome.ALREADY_CURRENT:
                verdict = "already current"
            else:
                verdict = f"would be refused: {v.reason}"
        else:
            target = expected or manifest.target
            tc = TARGET_CLASSES[target]
            slot, ram, budget_from = tc.flash_bytes, tc.ram_bytes, "target class"
            verdict = (
                f"answered but cannot take a model ({error})"
                if answered
                else f"unreachable ({error}); budget from target class {target}"
            )
        rate = nominal_rate(flasher.transport, baud)
        rows[flasher.node_id] = DryRunRow(
            node_id=flasher.node_id,
            transport=flasher.transport,
            target=target,
            budget_from=budget_from,
            slot_bytes=slot,
            ram_bytes=ram,
            model_bytes=len(artifact),
            arena_bytes=manifest.arena_bytes,
            fits_slot=len(artifact) <= slot,
            fits_arena=manifest.arena_bytes <= ram,
            compressed_bytes=compressed,
            rate_bytes_per_s=rate,
            estimated_s=round(len(artifact) / rate, 2),
            verdict=verdict,
            path=info.path if info is not None else "",
        )

    async with asyncio.TaskGroup() as tg:
        for flasher in flashers:
            tg.create_task(one(flasher), name=f"dry-run:{flasher.transport}:{flasher.node_id}")
    return [rows[f.node_id] for f in flashers]
