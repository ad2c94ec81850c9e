"""A firmware-like sensor node as a sans-IO state machine.

:class:`NodeLogic` does what a node's main loop does (batch samples, number
messages, keep what the gateway has not acknowledged, resend it, send a
heartbeat, obey commands, reboot) but owns no clock and no link: every call takes
``now_ms``, the simulation's monotonic time, and returns the uplink messages to
transmit. The caller moves them over serial, BLE or MQTT and feeds downlink
messages back through :meth:`NodeLogic.handle`. The same inputs always give the
same outputs, which is what the unit tests rely on.

Sequence numbers follow :mod:`gateway.protocol.messages`: one counter per boot starting at
1; a batch of ``k`` samples takes ``k`` numbers; everything else takes one.
Every uplink message (batches, inference results, status) stays in the bounded
unacknowledged buffer until an :class:`~gateway.protocol.messages.Ack` covers it, so the
gateway can always acknowledge cumulatively.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol

import numpy as np

from gateway.protocol.messages import (
    Ack,
    Channel,
    Command,
    CommandKind,
    DownlinkMessage,
    NodeInference,
    ReadingBatch,
    Sample,
    SlotInfo,
    Status,
    TimeBase,
    UplinkMessage,
    is_valid_node_id,
)

_LOGGER = logging.getLogger(__name__)

# A message in RAM: header plus 4-byte floats per value; used for the free-RAM figure.
_MSG_OVERHEAD_BYTES = 48
_FIRMWARE_RAM_BYTES = 18 * 1024


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """What an on-device model returns for one feature window."""

    score: float
    label: int | None  # None: the node labels by comparing score with its threshold
    latency_us: int


class Inferencer(Protocol):
    """An on-device model (see :class:`firmware_tools.sim.tflm.TflmModel`)."""

    model_id: str
    model_version: str
    model_hash: bytes
    sequence: int

    @property
    def window(self) -> int:
        """Samples per inference window."""

    def observe(self, values: tuple[float, ...]) -> None:
        """See every raw sample (models that calibrate on the node's first readings)."""

    def infer(self, window: np.ndarray) -> InferenceResult | None:
        """Score a ``(window, channels)`` float array; None while still calibrating."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """How one simulated node behaves. Times are in ms of simulation time."""

    node_id: str
    channels: tuple[Channel, ...]
    batch_size: int = 10
    batch_max_age_ms: int = 5_000  # send a partial batch rather than sit on old samples
    max_unacked: int = 64  # messages held for resending; overflow evicts the oldest
    resend_timeout_ms: int = 3_000
    resend_burst: int = 4  # resends per poll, oldest first, so a backlog drains gently
    status_interval_ms: int = 10_000
    time_base: TimeBase = TimeBase.UPTIME_MS
    unix_epoch_ms: int = 1_735_689_600_000  # wall clock at now_ms = 0 for UNIX_MS nodes
    clock_offset_ms: int = 0  # skew of the node's clock
    clock_drift_ppm: float = 0.0  # crystal error: + runs fast
    firmware_version: str = "fieldgate-sim/0.1.0"
    battery_full_mv: int | None = 4150  # None: mains powered, reports no battery
    battery_drain_mv_per_h: float = 12.0
    rssi_dbm: int | None = -62
    ram_total_bytes: int = 64 * 1024
    inference_every: int = 0  # samples between inferences; 0 = once per batch
    threshold: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not is_valid_node_id(self.node_id):
            raise ValueError(f"invalid node id {self.node_id!r}: 1..32 of [A-Za-z0-9._-]")
        if not self.channels:
            raise ValueError("a node needs at least one channel")
        for name in ("batch_size", "max_unacked", "resend_timeout_ms", "status_interval_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass(slots=True)
class NodeStats:
    """Counters since the node object was created (they survive simulated reboots)."""

    sent: int = 0  # first transmissions, messages
    sent_samples: int = 0
    resent: int = 0
    acked: int = 0  # messages released by an Ack
    acked_samples: int = 0
    evicted: int = 0  # messages dropped because the buffer was full
    evicted_samples: int = 0
    reboots: int = 0
    lost_on_reboot: int = 0  # unacked messages (and unsent samples) lost with RAM
    lost_samples_on_reboot: int = 0
    inferences: int = 0
    commands: int = 0
    duplicate_commands: int = 0
    rejected_commands: int = 0
    stale_acks: int = 0  # for another boot or node

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class _Held:
    msg: UplinkMessage
    last_sent_ms: int


@dataclass(slots=True)
class _Boot:
    boot_id: int
    boot_ms: int
    next_seq: int = 1
    next_status_ms: int = 0
    batch_started_ms: int | None = None
    pending: list[Sample] = field(default_factory=list)
    unacked: deque[_Held] = field(default_factory=deque)
    seen_cmds: deque[int] = field(default_factory=lambda: deque(maxlen=32))
    since_inference: int = 0


class NodeLogic:
    """One node's firmware logic. Not thread-safe; drive it from one task."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        model: Inferencer | None = None,
        now_ms: int = 0,
        slots: Callable[[], tuple[SlotInfo, ...]] | None = None,
    ) -> None:
        self.config = config
        self.model = model
        # The node's model flash, when it has one (firmware_tools.sim.slots); else the
        # running model is reported as a single confirmed slot.
        self._slots_source = slots
        self.stats = NodeStats()
        self.threshold = config.threshold
        self.outputs: dict[str, bool] = {}
        self._rng = random.Random(config.seed)
        self._window: deque[tuple[float, ...]] = deque(maxlen=model.window if model else 1)
        self._boot = self._new_boot(now_ms, previous=None)

    # -- identity and time -----------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def boot_id(self) -> int:
        return self._boot.boot_id

    @property
    def next_seq(self) -> int:
        return self._boot.next_seq

    @property
    def unacked(self) -> tuple[UplinkMessage, ...]:
        return tuple(h.msg for h in self._boot.unacked)

    @property
    def oldest_unacked_seq(self) -> int:
        return self._boot.unacked[0].msg.seq if self._boot.unacked else 0

    def uptime_ms(self, now_ms: int) -> int:
        """Uptime as the node's own (possibly drifting) crystal counts it."""
        # A sample scheduled just before a reboot that lands after it would read negative;
        # a real uptime counter starts at 0.
        elapsed = max(0, now_ms - self._boot.boot_ms)
        return round(elapsed * (1 + self.config.clock_drift_ppm * 1e-6))

    def timestamp(self, now_ms: int) -> int:
        """The node's timestamp for ``now_ms`` in its configured time base, skew included."""
        cfg = self.config
        if cfg.time_base is TimeBase.UPTIME_MS:
            return self.uptime_ms(now_ms) + cfg.clock_offset_ms
        return round(cfg.unix_epoch_ms + now_ms * (1 + cfg.clock_drift_ppm * 1e-6)) + (
            cfg.clock_offset_ms
        )

    # -- uplink ----------------------------------------------------------------------------

    def add_sample(self, now_ms: int, values: Sequence[float]) -> list[UplinkMessage]:
        """Record one sample; returns the messages to transmit now (a full batch, inference)."""
        if len(values) != len(self.config.channels):
            msg = (
                f"{self.node_id}: got {len(values)} values for {len(self.config.channels)} channels"
            )
            raise ValueError(msg)
        boot = self._boot
        if boot.batch_started_ms is None:
            boot.batch_started_ms = now_ms
        # An MCU holds readings as float32; rounding here also lets CBOR use 4-byte floats.
        as_f32 = tuple(float(v) for v in np.asarray(values, dtype=np.float32))
        boot.pending.append(Sample(t=self.timestamp(now_ms), values=as_f32))
        out: list[UplinkMessage] = []
        if len(boot.pending) >= self.config.batch_size:
            out.append(self._flush_batch(now_ms))
        if self.model is not None:
            self.model.observe(tuple(values))
            self._window.append(tuple(values))
            boot.since_inference += 1
            every = self.config.inference_every or self.config.batch_size
            if boot.since_inference >= every and len(self._window) == self.model.window:
                boot.since_inference = 0
                inference = self._infer(now_ms)
                if inference is not None:
                    out.append(inference)
        return out

    def poll(self, now_ms: int) -> list[UplinkMessage]:
        """Timers: an old partial batch, the heartbeat, resends of overdue messages."""
        boot, cfg = self._boot, self.config
        out: list[UplinkMessage] = []
        if (
            boot.pending
            and boot.batch_started_ms is not None
            and now_ms - boot.batch_started_ms >= cfg.batch_max_age_ms
        ):
            out.append(self._flush_batch(now_ms))
        if now_ms >= boot.next_status_ms:
            out.append(self.make_status(now_ms))
        resends = 0
        for held in boot.unacked:
            if resends >= cfg.resend_burst:
                break
            if now_ms - held.last_sent_ms >= cfg.resend_timeout_ms:
                held.last_sent_ms = now_ms
                out.append(held.msg)
                resends += 1
        self.stats.resent += resends
        return out

    def next_deadline_ms(self) -> int:
        """The earliest ``now_ms`` at which :meth:`poll` may have something to do."""
        boot, cfg = self._boot, self.config
        deadline = boot.next_status_ms
        if boot.pending and boot.batch_started_ms is not None:
            deadline = min(deadline, boot.batch_started_ms + cfg.batch_max_age_ms)
        if boot.unacked:
            oldest_due = min(h.last_sent_ms for h in boot.unacked) + cfg.resend_timeout_ms
            deadline = min(deadline, oldest_due)
        return deadline

    def make_status(self, now_ms: int) -> Status:
        """A heartbeat now (also the answer to REQUEST_INFO); it resets the heartbeat timer."""
        cfg, boot = self.config, self._boot
        boot.next_status_ms = now_ms + cfg.status_interval_ms
        seq = self._take_seq(1)
        self._make_room()
        # The status is itself held, so the oldest held seq is never above its own.
        oldest = boot.unacked[0].msg.seq if boot.unacked else seq
        status = Status(
            node_id=cfg.node_id,
            boot_id=boot.boot_id,
            seq=seq,
            time_base=cfg.time_base,
            t=self.timestamp(now_ms),
            uptime_ms=self.uptime_ms(now_ms),
            battery_mv=self._battery_mv(now_ms),
            rssi_dbm=None if cfg.rssi_dbm is None else cfg.rssi_dbm + self._rng.randint(-4, 4),
            free_ram_bytes=self._free_ram_bytes(),
            firmware_version=cfg.firmware_version,
            oldest_unacked_seq=oldest,
            slots=self._slots(),
        )
        self._hold(status, now_ms)
        return status

    # -- downlink --------------------------------------------------------------------------

    def handle(self, msg: DownlinkMessage, now_ms: int) -> list[UplinkMessage]:
        """Apply an Ack or a Command; returns any immediate reply (a Status for REQUEST_INFO)."""
        if isinstance(msg, Ack):
            self._ack(msg)
            return []
        return self._command(msg, now_ms)

    def set_model(self, model: Inferencer | None) -> None:
        """Run another model from now on (a newly confirmed slot, or a rollback)."""
        self.model = model
        self._window = deque(maxlen=model.window if model else 1)
        self._boot.since_inference = 0

    def reboot(self, now_ms: int) -> None:
        """Power-cycle: RAM (unacked messages, the partial batch) is lost, a new boot begins."""
        self.stats.reboots += 1
        self._boot = self._new_boot(now_ms, previous=self._boot)

    # -- internals -------------------------------------------------------------------------

    def _new_boot(self, now_ms: int, previous: _Boot | None) -> _Boot:
        if previous is not None:
            lost = list(previous.unacked)
            self.stats.lost_on_reboot += len(lost)
            self.stats.lost_samples_on_reboot += len(previous.pending) + sum(
                len(h.msg.samples) for h in lost if isinstance(h.msg, ReadingBatch)
            )
            _LOGGER.info(
                "%s: reboot, lost %d unacked messages and %d unsent samples",
                self.node_id,
                len(lost),
                len(previous.pending),
            )
        boot_id = previous.boot_id if previous else 0
        while boot_id == (previous.boot_id if previous else 0):
            boot_id = self._rng.getrandbits(32)
        self._window.clear()
        # The first heartbeat goes out at boot, as firmware announces itself.
        return _Boot(boot_id=boot_id, boot_ms=now_ms, next_status_ms=now_ms)

    def _take_seq(self, count: int) -> int:
        seq = self._boot.next_seq
        self._boot.next_seq += count
        return seq

    def _hold(self, msg: UplinkMessage, now_ms: int) -> None:
        self._make_room()
        self._boot.unacked.append(_Held(msg, now_ms))
        self.stats.sent += 1
        if isinstance(msg, ReadingBatch):
            self.stats.sent_samples += len(msg.samples)

    def _make_room(self) -> None:
        """Evict the oldest held messages so one more fits (overflow policy: oldest go)."""
        boot = self._boot
        while len(boot.unacked) >= self.config.max_unacked:
            gone = boot.unacked.popleft().msg
            self.stats.evicted += 1
            if isinstance(gone, ReadingBatch):
                self.stats.evicted_samples += len(gone.samples)

    def _flush_batch(self, now_ms: int) -> ReadingBatch:
        boot = self._boot
        samples = tuple(boot.pending)
        boot.pending.clear()
        boot.batch_started_ms = None
        batch = ReadingBatch(
            node_id=self.node_id,
            boot_id=boot.boot_id,
            seq=self._take_seq(len(samples)),
            time_base=self.config.time_base,
            channels=self.config.channels,
            samples=samples,
        )
        self._hold(batch, now_ms)
        return batch

    def _infer(self, now_ms: int) -> NodeInference | None:
        assert self.model is not None
        result = self.model.infer(np.asarray(self._window, dtype=np.float32))
        if result is None:
            return None
        self.stats.inferences += 1
        label = result.label if result.label is not None else int(result.score >= self.threshold)
        inference = NodeInference(
            node_id=self.node_id,
            boot_id=self._boot.boot_id,
            seq=self._take_seq(1),
            time_base=self.config.time_base,
            t=self.timestamp(now_ms),
            model_id=self.model.model_id,
            model_version=self.model.model_version,
            model_hash=self.model.model_hash,
            score=float(result.score),
            label=label,
            latency_us=result.latency_us,
        )
        self._hold(inference, now_ms)
        return inference

    def _ack(self, ack: Ack) -> None:
        boot = self._boot
        if ack.node_id != self.node_id or ack.boot_id != boot.boot_id:
            self.stats.stale_acks += 1
            return
        kept: deque[_Held] = deque()
        for held in boot.unacked:
            if held.msg.last_seq > ack.up_to_seq:
                kept.append(held)
                continue
            self.stats.acked += 1
            if isinstance(held.msg, ReadingBatch):
                self.stats.acked_samples += len(held.msg.samples)
        boot.unacked = kept

    def _command(self, cmd: Command, now_ms: int) -> list[UplinkMessage]:
        boot = self._boot
        if cmd.node_id != self.node_id:
            self.stats.rejected_commands += 1
            return []
        if cmd.cmd_id in boot.seen_cmds:
            self.stats.duplicate_commands += 1
            return []
        boot.seen_cmds.append(cmd.cmd_id)
        args = dict(cmd.args)
        self.stats.commands += 1
        if cmd.kind is CommandKind.SET_THRESHOLD:
            value = args.get("threshold")
            if isinstance(value, bool) or not isinstance(value, int | float):
                return self._reject(cmd, "threshold must be a number")
            self.threshold = float(value)
        elif cmd.kind is CommandKind.ACTUATE:
            output, state = args.get("output"), args.get("state")
            if not isinstance(output, str) or not isinstance(state, bool):
                return self._reject(cmd, "actuate needs output: str and state: bool")
            self.outputs[output] = state
        elif cmd.kind is CommandKind.REQUEST_INFO:
            return [self.make_status(now_ms)]
        elif cmd.kind is CommandKind.REBOOT:
            self.reboot(now_ms)
        return []

    def _reject(self, cmd: Command, reason: str) -> list[UplinkMessage]:
        self.stats.commands -= 1
        self.stats.rejected_commands += 1
        _LOGGER.warning(
            "%s: rejected command %d (%s): %s", self.node_id, cmd.cmd_id, cmd.kind.name, reason
        )
        return []

    def _battery_mv(self, now_ms: int) -> int | None:
        cfg = self.config
        if cfg.battery_full_mv is None:
            return None
        drained = cfg.battery_drain_mv_per_h * now_ms / 3_600_000
        return max(2800, int(cfg.battery_full_mv - drained) + self._rng.randint(-3, 3))

    def _free_ram_bytes(self) -> int:
        per_value = 4 * len(self.config.channels) + 4
        held = sum(
            _MSG_OVERHEAD_BYTES
            + (per_value * len(h.msg.samples) if isinstance(h.msg, ReadingBatch) else 0)
            for h in self._boot.unacked
        )
        return max(0, self.config.ram_total_bytes - _FIRMWARE_RAM_BYTES - held)

    def _slots(self) -> tuple[SlotInfo, ...]:
        if self._slots_source is not None:
            return self._slots_source()
        if self.model is None:
            return ()
        m = self.model
        return (SlotInfo(0, m.model_id, m.model_version, m.model_hash, m.sequence, True, True),)
