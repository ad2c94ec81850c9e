"""The ``[scoring]`` config section: the gateway model, channel mapping, batching, fusion.

The shipped gateway model (``tinymodels/artifacts/gateway_model.tflite``) was trained on the
SKAB pump rig and names its eight input channels the SKAB way. Nodes name theirs the fleet way
("current", "vib_rms"), so ``channel_map`` says which node channel feeds which model channel.

Missing model channels (``missing_channels``):

* ``"baseline"`` (default): a model channel no node channel maps to is fed a constant. It then
  standardises to exactly 0 (its fit-part mean; ``std_floor`` keeps the division finite), so it
  always looks perfectly normal and the detector judges the machine on the channels it has.
  The simulator's pump has no second accelerometer and no voltage: both are held at baseline.
* ``"skip"``: a node that lacks any of the model's *input* channels (``model_channels``) is not
  scored at all (counted in ``PipelineStats.unscorable_rows``).

Either way a node none of whose channels map is never scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tinymodels.fusion_rule import DEFAULT_FUSION_RULE
from tinymodels.runtime import DEFAULT_GATEWAY_MODEL

# Node channel name -> model channel name (the shipped model's SKAB names).
DEFAULT_CHANNEL_MAP: dict[str, str] = {
    # The simulator's pump (firmware_tools.sim.signals.PUMP_CHANNELS).
    "vib_rms": "Accelerometer1RMS",
    "current": "Current",
    "pressure": "Pressure",
    "temperature": "Temperature",
    "flow": "Volume Flow RateRMS",
    # SKAB replayed through a simulated node (firmware_tools.sim.replay.SKAB_COLUMNS).
    "vib_rms_1": "Accelerometer1RMS",
    "vib_rms_2": "Accelerometer2RMS",
    "fluid_temperature": "Thermocouple",
    "voltage": "Voltage",
    # SKAB's own column names map to themselves.
    "Accelerometer1RMS": "Accelerometer1RMS",
    "Accelerometer2RMS": "Accelerometer2RMS",
    "Current": "Current",
    "Pressure": "Pressure",
    "Temperature": "Temperature",
    "Thermocouple": "Thermocouple",
    "Voltage": "Voltage",
    "Volume Flow RateRMS": "Volume Flow RateRMS",
}

# The shipped node model's threshold (tinymodels/artifacts/node_model.json "threshold"): its raw
# score is a reconstruction MSE, divided by this to be in threshold units like the gateway's.
DEFAULT_NODE_THRESHOLDS: dict[str, float] = {
    "node_model": 1.056067,
    # tinymodels/artifacts/node_window_model.json "threshold": the node model over windows of
    # vib_rms, current, pressure and flow (issue 16).
    "node_window_model": 3.831099,
}


class _Section(BaseModel):
    # A string under a field is its description (docs/configuration.md is written from them).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class DisagreementConfig(_Section):
    """When the node's model and the gateway's disagree (see docs/scoring.md, "Fusion").

    They disagree while exactly one of the two latest scores is >= 1.0 and the two were
    produced within ``max_age_s`` of each other; a :class:`~gateway.events.Disagreement` is
    emitted once the disagreement has lasted ``min_duration_s`` (by the scores' own
    timestamps) and again every ``min_duration_s`` while it lasts.
    """

    enabled: bool = True
    """watch for node model and gateway model disagreeing (drift or a bad node model)"""
    min_duration_s: float = Field(30.0, gt=0)
    """exactly one of the two scores at or above 1.0 for this long counts as a disagreement"""
    max_age_s: float = Field(10.0, gt=0, description="how far apart the two scores may be")


class NodeTypeConfig(_Section):
    """Which detector and channel map apply to one type of node (``[scoring.node_types.<type>]``,
    :mod:`gateway.pipeline.node_types`). A node belongs to the first type (in config order)
    one of whose ``nodes`` patterns matches its id; a node of no type is scored as before
    (``scoring.channel_map``, ``scoring.model_path``, fallback)."""

    nodes: list[str] = Field(min_length=1)
    """node id patterns of this type (shell-style: "pump-*", "fan-0[1-3]")"""
    detector: Literal["model", "own_baseline", "off"] = "model"
    """model: the type's gateway model through its channel map (a node it does not cover falls back to its own baseline unless scoring.fallback = off); own_baseline: T2 + MSET over the node's own channels; off: not scored"""
    model_path: Path | None = None
    """gateway model .tflite for this type (verified like scoring.model_path); none: the running gateway model. Its per-node baselines are kept in memory only, and hot-swap and shadow apply to the running model only"""
    channel_map: dict[str, str] | None = None
    """node channel -> model channel for this type; none: scoring.channel_map"""
    missing_channels: Literal["baseline", "skip"] | None = None
    """as scoring.missing_channels, for this type; none: that setting"""


class ScoringConfig(_Section):
    enabled: bool = True
    """score committed readings with the gateway model (LiteRT); off: only health and gap observations"""
    model_path: Path = Field(DEFAULT_GATEWAY_MODEL, description="gateway model .tflite")
    channel_map: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_CHANNEL_MAP))
    """node channel -> model channel; replaces the default map entirely"""
    missing_channels: Literal["baseline", "skip"] = "baseline"
    """model channels no node channel feeds: baseline (look normal) or skip (do not score the node)"""
    calibration_rows: int | None = Field(
        None,
        ge=16,
        description="rows per node that form its normal baseline before scoring starts; "
        "default: the model manifest's fit_rows (400 for the shipped model)",
    )
    # 128, not 256: under bench.alert_latency's load, 256-row calls stalled the event loop for
    # 25-38 ms once or more a run (its loop-lag max; 2.4-4.8 ms at 64 and 128), while a site's
    # CPU was the same at 128 (bench.site 0.097-0.109 core) and higher at 64 (0.123-0.125).
    batch_rows: int = Field(
        128,
        ge=1,
        description="most rows scored in one model call; a batch this big is scored without"
        " waiting out max_batch_delay_ms (bigger calls hold the event loop longer)",
    )
    max_batch_delay_ms: float = Field(
        250.0,
        ge=0,
        description="how long a small batch waits for more rows before scoring (anomaly rules"
        " debounce over seconds, 5 s by default, so a quarter of a second costs nothing; at a"
        " site's trickle it makes one model call of many nodes' rows instead of many small ones)",
    )
    queue_rows: int = Field(
        50_000,
        ge=1,
        description="rows waiting for the scorer; beyond this new rows are dropped and counted",
    )
    node_thresholds: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_NODE_THRESHOLDS),
        description="node model id -> the raw node score that means 1.0 (unknown ids: 1.0)",
    )
    persist_baselines: bool = Field(
        True,
        description="keep each node's completed calibration baseline in <data_dir>/baselines.db"
        " so that after a restart the node is scored at once instead of recalibrating (a "
        "baseline recorded under another channel layout or length is ignored)",
    )
    fallback: Literal["own_baseline", "off"] = "own_baseline"
    """a node the gateway model cannot score (no channel maps, or skip and an input missing): own_baseline scores it by T2 + MSET over its own channels fitted on its own baseline (model_version own-baseline:t2+mset); off leaves it unscored"""
    node_types: dict[str, NodeTypeConfig] = Field(default_factory=dict)
    """per node type (by node id pattern): detector, gateway model and channel map; a node of no type uses the settings above"""
    disagreement: DisagreementConfig = DisagreementConfig()
    fusion_rule_path: Path | None = Field(
        DEFAULT_FUSION_RULE,
        description="fusion rule JSON (tinymodels.fusion_cv) for the fused score (AnomalyScore "
        "source=fused); none: no fused score",
    )
    shadow_model_path: Path | None = Field(
        None, description="candidate model scored alongside (AnomalyScore source=shadow)"
    )
    public_key_path: Path | None = Field(
        None,
        description="Ed25519 public key that signed models must verify against (the model and "
        "its runtime settings); without it only the shipped model runs and hot-swap and shadow "
        "models are refused",
    )
    model_families: tuple[str, ...] = ()
    """model families (signed manifest family, else name) a hot-swap may switch to besides the running model's own; each keeps its own anti-rollback floor"""
    model_inbox_poll_s: float = Field(2.0, ge=0)
    """how often <data_dir>/gateway-model/incoming/ is checked for a new signed gateway model to swap in (fieldgate model install puts it there); 0: not watched"""
