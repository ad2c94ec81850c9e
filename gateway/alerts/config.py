"""The ``[alerts]`` config section: rules, re-notification, escalation, silence windows.

Rules are a table keyed by their name, so TOML itself refuses two rules of the same name and
every validation error names the rule and the key
(``alerts.rules.high_current.threshold.hysteresis``)::

    [alerts.rules.high_current]
    kind = "threshold"
    channel = "current"
    above = 12.0
    hysteresis = 0.5
    min_duration_s = 3
    severity = "critical"
    nodes = ["pump-*"]

With ``use_default_rules = true`` (the default) the rules in :data:`DEFAULT_RULES` are in
force too; a rule of the same name replaces a default (``enabled = false`` switches it off).
A gateway with no ``[alerts]`` section therefore alerts on the gateway model's anomaly
score, silent nodes, low batteries and data gaps. See docs/alerts.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.errors import ConfigError
from gateway.events import Severity
from gateway.protocol.messages import NODE_ID_ALPHABET

# No ":" in rule names: alert ids are "<rule>:<node>:<n>" and must split unambiguously.
RULE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,48}$")
_GLOB_CHARS = NODE_ID_ALPHABET | frozenset("*?[]!")
_DAILY = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


def _check_selectors(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("select at least one node (use ['*'] for all)")
    for sel in value:
        if not sel or not set(sel) <= _GLOB_CHARS:
            raise ValueError(f"{sel!r} is not a node id or glob of [A-Za-z0-9._-*?[]!]")
    return value


class _Section(BaseModel):
    # A string under a field is its description (docs/configuration.md is written from them).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class _RuleBase(_Section):
    enabled: bool = True
    """false switches the rule (or the default rule of this name) off"""
    severity: Literal["info", "warning", "critical"] = "warning"
    """severity of the alerts this rule raises"""
    nodes: tuple[str, ...] = Field(
        ("*",), description="node ids or shell-style globs ('pump-*'); default: every node"
    )
    renotify_interval_s: float | None = Field(
        None, ge=0, description="override of alerts.renotify_interval_s (0: never)"
    )
    escalation_timeout_s: float | None = Field(
        None, ge=0, description="override of alerts.escalation_timeout_s (0: never)"
    )

    @field_validator("nodes")
    @classmethod
    def _node_selectors(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_selectors(value)

    @property
    def severity_level(self) -> Severity:
        return Severity[self.severity.upper()]


class ThresholdRule(_RuleBase):
    """A channel at or above ``above`` (or at or below ``below``) for ``min_duration_s``.

    Clears once the value is back past the threshold by more than ``hysteresis``.
    """

    kind: Literal["threshold"]
    """rule kind"""
    channel: str = Field(min_length=1)
    """the node channel compared"""
    above: float | None = None
    """raise when the value is at or above this (give above or below)"""
    below: float | None = None
    """raise when the value is at or below this (give above or below)"""
    hysteresis: float = Field(0.0, ge=0)
    """clears only this far back on the safe side of the limit"""
    min_duration_s: float = Field(0.0, ge=0)
    """the condition must hold this long before the alert is raised (debounce)"""

    @model_validator(mode="after")
    def _one_direction(self) -> ThresholdRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' or 'below'")
        return self


class AnomalyRule(_RuleBase):
    """An anomaly score (threshold units, 1.0 = the model's own threshold) at or above
    ``threshold`` for ``min_duration_s`` (the debounce); clears below
    ``threshold - hysteresis``. Shadow-model scores never alert."""

    kind: Literal["anomaly"]
    """rule kind"""
    source: Literal["gateway", "node", "fused"] = "gateway"
    """whose score: the gateway model's, the node's own model's, or the fused score"""
    threshold: float = 1.0
    """raise at or above this score (threshold units: 1.0 is the model's own threshold)"""
    hysteresis: float = Field(0.2, ge=0)
    """clears below threshold - hysteresis"""
    min_duration_s: float = Field(5.0, ge=0)
    """the score must stay high this long before the alert is raised (debounce)"""


class SilentRule(_RuleBase):
    """No observation at all from a node for ``after_s``; clears on its next one."""

    kind: Literal["silent"]
    """rule kind"""
    after_s: float = Field(120.0, gt=0)
    """raise when nothing arrived from a node for this long (judged on receive time)"""


class BatteryRule(_RuleBase):
    """Battery at or below ``below_mv``; clears above ``below_mv + hysteresis_mv``."""

    kind: Literal["battery"]
    """rule kind"""
    below_mv: int = Field(3300, gt=0)
    """raise at or below this battery voltage"""
    hysteresis_mv: int = Field(100, ge=0)
    """clears above below_mv + hysteresis_mv"""
    min_duration_s: float = Field(0.0, ge=0)
    """the voltage must stay low this long before the alert is raised"""


class GapRule(_RuleBase):
    """At least ``lost`` messages of a node lost within the last ``window_s``."""

    kind: Literal["gap"]
    """rule kind"""
    lost: int = Field(10, ge=1)
    """raise when at least this many messages of a node were lost within window_s"""
    window_s: float = Field(60.0, gt=0)
    """the window over which lost messages are counted"""


class DisagreementRule(_RuleBase):
    """At least ``count`` node/gateway disagreements of a node within ``window_s``."""

    kind: Literal["disagreement"]
    """rule kind"""
    count: int = Field(3, ge=1)
    """raise after at least this many node/gateway disagreements within window_s"""
    window_s: float = Field(600.0, gt=0)
    """the window over which disagreements are counted"""


Rule = Annotated[
    ThresholdRule | AnomalyRule | SilentRule | BatteryRule | GapRule | DisagreementRule,
    Field(discriminator="kind"),
]
RuleKind = Literal["threshold", "anomaly", "silent", "battery", "gap", "disagreement"]

DEFAULT_RULES: dict[str, Rule] = {
    "anomaly": AnomalyRule(kind="anomaly", source="gateway", severity="warning"),
    "node_silent": SilentRule(kind="silent", after_s=120.0, severity="warning"),
    "battery_low": BatteryRule(kind="battery", below_mv=3300, hysteresis_mv=100),
    "data_gap": GapRule(kind="gap", lost=10, window_s=60.0, severity="info"),
}


class SilenceWindow(_Section):
    """A maintenance window: no alert is raised for the selected nodes (and rules) while it
    is in force. Either an absolute ``start``/``end`` (with a UTC offset) or a ``daily``
    ``"HH:MM-HH:MM"`` range in ``timezone`` (may wrap midnight: ``"22:00-06:00"``)."""

    nodes: tuple[str, ...] = Field(("*",), description="node ids or globs")
    rules: tuple[str, ...] = Field((), description="only these rules (default: all)")
    start: datetime | None = None
    """absolute window start, with a UTC offset (give start and end, or daily)"""
    end: datetime | None = None
    """absolute window end, with a UTC offset"""
    daily: str | None = None
    """a daily HH:MM-HH:MM range in timezone; may wrap midnight"""
    timezone: str = "UTC"
    """IANA time zone of daily, e.g. Europe/Berlin"""
    reason: str = ""
    """shown with alerts that were held back and in the alert history"""

    @field_validator("nodes")
    @classmethod
    def _node_selectors(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_selectors(value)

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2025-06-01T08:00:00+02:00")
        return value

    @field_validator("daily")
    @classmethod
    def _daily_range(cls, value: str | None) -> str | None:
        if value is None:
            return None
        m = _DAILY.match(value)
        if not m or int(m[1]) > 23 or int(m[3]) > 23 or int(m[2]) > 59 or int(m[4]) > 59:
            raise ValueError("must be 'HH:MM-HH:MM' (24 h), e.g. '22:00-06:00'")
        if m.group(1, 2) == m.group(3, 4):
            raise ValueError("start and end are the same time; omit the window instead")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (IANA name like 'Europe/Berlin')"
            ) from None
        return value

    @model_validator(mode="after")
    def _one_form(self) -> SilenceWindow:
        absolute = self.start is not None or self.end is not None
        if absolute == (self.daily is not None):
            raise ValueError("give either 'start' and 'end', or 'daily'")
        if absolute:
            if self.start is None or self.end is None:
                raise ValueError("an absolute window needs both 'start' and 'end'")
            if self.end <= self.start:
                raise ValueError("'end' must be after 'start'")
        return self

    def daily_range(self) -> tuple[time, time] | None:
        if self.daily is None:
            return None
        m = _DAILY.match(self.daily)
        assert m is not None  # validated
        return time(int(m[1]), int(m[2])), time(int(m[3]), int(m[4]))


class AlertsConfig(_Section):
    use_default_rules: bool = Field(True, description="DEFAULT_RULES apply unless replaced")
    rules: dict[str, Rule] = Field(default_factory=dict)
    """alert rules by name; a name of a default rule replaces it"""
    renotify_interval_s: float = Field(
        900.0, ge=0, description="re-notify a raised, unacknowledged alert this often (0: never)"
    )
    escalation_timeout_s: float = Field(
        3600.0, ge=0, description="escalate an alert unacknowledged this long (0: never)"
    )
    max_escalations: int = Field(1, ge=0, description="escalate at most this often per alert")
    silences: tuple[SilenceWindow, ...] = ()
    """maintenance windows, one [[alerts.silences]] table each"""
    tick_interval_s: float = Field(1.0, gt=0, description="how often the gateway calls tick()")

    @field_validator("rules")
    @classmethod
    def _rule_names(cls, value: dict[str, Rule]) -> dict[str, Rule]:
        for name in value:
            if not RULE_NAME.match(name):
                raise ValueError(f"rule name {name!r}: use 1-48 characters of [A-Za-z0-9_-]")
        return value

    @model_validator(mode="after")
    def _silences_name_rules(self) -> AlertsConfig:
        known = set(self.effective_rules())
        for i, window in enumerate(self.silences):
            for name in window.rules:
                if name not in known:
                    raise ValueError(f"silences.{i}.rules: no enabled rule named {name!r}")
        return self

    def effective_rules(self) -> dict[str, Rule]:
        """The rules in force: defaults (if used) overlaid by the configured ones, enabled only."""
        merged: dict[str, Rule] = dict(DEFAULT_RULES) if self.use_default_rules else {}
        merged.update(self.rules)
        return {name: rule for name, rule in merged.items() if rule.enabled}

    def threshold_rules(self) -> list[ThresholdRule]:
        """The channel-threshold rules in force (the only ones that judge a reading's value)."""
        return [r for r in self.effective_rules().values() if isinstance(r, ThresholdRule)]


def load_alerts_config(data: Mapping[str, Any]) -> AlertsConfig:
    """Validate an ``[alerts]`` table on its own (tools, tests); errors name the key path from
    ``alerts``, e.g. ``alerts.rules.high_current.threshold.hysteresis``."""
    try:
        return AlertsConfig.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(["alerts", *(str(p) for p in err["loc"])])
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            reason = "unknown key (misspelt? see docs/alerts.md)"
        raise ConfigError(key, reason) from None
