"""The typed events of the gateway's local decision path (architecture: pipeline → alerts → outputs).

Three stages hand these to each other, each owned by its own package:

* ``gateway.pipeline`` turns committed journal data into :data:`Observation` s (readings per
  channel, node health, gaps, anomaly scores from the gateway model and from the node's own
  model, and node/gateway disagreement);
* ``gateway.alerts`` evaluates the configured rules over observations (plus a clock tick for
  "node silent") and emits :class:`AlertEvent` s as alerts change state;
* ``gateway.outputs`` delivers alert events locally (event stream, local MQTT, node command,
  script hook) and through durable outboxes (webhook, e-mail).

All times are gateway wall-clock milliseconds since the epoch (node uptime already mapped by
the journal's clock, invariant "Time is the node's, within the gateway's bounds"). Events
are frozen dataclasses with no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChannelReading:
    """One sample of one channel, as committed to the journal."""

    node_id: str
    t_ms: int
    channel: str
    value: float


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """What a node's Status said about its health."""

    node_id: str
    t_ms: int
    battery_mv: int | None
    rssi_dbm: int | None
    free_ram_bytes: int | None


@dataclass(frozen=True, slots=True)
class GapObserved:
    """Messages of a node that will never arrive (sequence gap the journal counted)."""

    node_id: str
    t_ms: int
    lost: int


class ScoreSource(enum.StrEnum):
    GATEWAY = "gateway"  # the gateway's model (LiteRT) over the node's readings
    NODE = "node"  # the node's own on-device model (NodeInference)
    SHADOW = "shadow"  # a candidate gateway model scored alongside, never alerts


@dataclass(frozen=True, slots=True)
class AnomalyScore:
    """An anomaly score in threshold units: ``score >= 1.0`` is anomalous for that model."""

    node_id: str
    t_ms: int
    source: ScoreSource
    score: float
    model_version: str


@dataclass(frozen=True, slots=True)
class Disagreement:
    """The node's model and the gateway's disagree about the same stretch of time.

    A sign of drift or of a bad node model; recorded and alertable.
    """

    node_id: str
    t_ms: int
    gateway_score: float
    node_score: float


Observation = ChannelReading | NodeHealth | GapObserved | AnomalyScore | Disagreement


class Severity(enum.IntEnum):
    INFO = 0
    WARNING = 1
    CRITICAL = 2


class AlertState(enum.StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class AlertEventKind(enum.StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"
    RENOTIFIED = "renotified"  # still raised and unacknowledged after the re-notify interval
    ESCALATED = "escalated"  # unacknowledged past the escalation timeout; severity goes up


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert's current state. ``alert_id`` is unique and stable for its whole life;
    ``key`` (rule + node) is what dedupe works on: one open alert per key."""

    alert_id: str
    key: str
    rule: str
    node_id: str
    severity: Severity
    state: AlertState
    message: str
    value: float | None
    raised_at_ms: int
    acked_at_ms: int | None = None
    acked_by: str | None = None
    ack_comment: str | None = None
    cleared_at_ms: int | None = None
    escalations: int = 0


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A change of an alert, in the order the engine made it. ``event_id`` is unique and
    deterministic (alert id + kind + count), so a resent notification can be recognised."""

    event_id: str
    kind: AlertEventKind
    at_ms: int
    alert: Alert
