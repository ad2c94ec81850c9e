"""The ``[outputs]`` config section: where alert events go besides the alert journal.

The lead mounts :class:`OutputsConfig` on ``GatewayConfig`` as ``outputs``; this module
does not import ``gateway.config`` at import time (that module imports this one).
Every section is off by default except the in-process event stream and node actions
(which do nothing until an action is configured). Validation errors name the key.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.events import AlertEvent, Severity
from gateway.protocol.messages import NODE_ID_ALPHABET, CommandKind, is_valid_node_id

SeverityName = Literal["info", "warning", "critical"]
EventKindName = Literal["raised", "acknowledged", "cleared", "renotified", "escalated"]
CommandName = Literal["set_threshold", "actuate", "request_info", "reboot"]
ArgValue = bool | int | float | str

ALL_KINDS: tuple[EventKindName, ...] = (
    "raised",
    "acknowledged",
    "cleared",
    "renotified",
    "escalated",
)
# Actions that change the plant (stop a motor, sound a buzzer) should follow an alert
# becoming (more) urgent, not its acknowledgement or clearing, unless asked for.
_ACTION_KINDS: tuple[EventKindName, ...] = ("raised", "escalated")

_MAX_ARGS = 16  # docs/protocol.md §3
_MAX_ARG_STR = 64


def severity_of(name: SeverityName) -> Severity:
    return Severity[name.upper()]


class _Section(BaseModel):
    # A string under a field is its description (docs/configuration.md is written from them).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class _EventFilter(_Section):
    """Which events an output takes: by kind and minimum severity."""

    kinds: tuple[EventKindName, ...] = ALL_KINDS
    """which alert events this output takes"""
    min_severity: SeverityName = "info"
    """lowest severity this output takes"""

    def wants(self, event: AlertEvent) -> bool:
        return event.kind.value in self.kinds and event.alert.severity >= severity_of(
            self.min_severity
        )


def _mqtt_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ValueError("must look like mqtt://host:port")
    try:
        parts.port  # noqa: B018 - urlsplit checks the range only when asked
    except ValueError:
        raise ValueError("the port must be 1-65535") from None
    return value


class LocalMqttOutputConfig(_EventFilter):
    """Alert events to the site's own broker, for sirens, relays and PLCs."""

    enabled: bool = False
    """publish alert events to the site's own broker (sirens, relays, PLCs)"""
    url: str = "mqtt://127.0.0.1:1883"
    """broker address, mqtt://host:port"""
    client_id: str = "fieldgate-alerts"
    """client id of the alert publisher"""
    topic_prefix: str = Field("fieldgate", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    """topic: <topic_prefix>/<site>/alerts/<node_id>"""
    qos: Literal[0, 1, 2] = 1
    """MQTT QoS of alert messages"""
    # retain: a PLC that (re)connects sees the latest event of each node at once.
    retain: bool = False
    """retain each node's latest event, so a PLC that reconnects sees it at once"""
    buffer_max_events: int = Field(1000, ge=1, description="held while the broker is down")
    reconnect_max_s: float = Field(30.0, gt=0)
    """longest wait between reconnect attempts"""
    username: str | None = None
    """broker user name (optional)"""
    password: SecretStr | None = None
    """broker password (optional; better from the environment)"""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _mqtt_url(value)


class NodeActionConfig(_EventFilter):
    """Send a command to a node when a matching alert event happens.

    Matches on ``rule`` (alert rule name; omitted: any rule) and the inherited
    ``min_severity`` / ``kinds`` (default: raised and escalated only). The command goes
    to ``node_id`` or, when omitted, to the alert's own node.
    """

    rule: str | None = None
    """the alert rule whose events trigger this action"""
    node_id: str | None = None
    """send to this node instead of the alerting one"""
    command: CommandName
    """the command sent to the node"""
    args: dict[str, ArgValue] = Field(default_factory=dict)
    """command arguments, e.g. { output = \"motor\", state = false }"""
    kinds: tuple[EventKindName, ...] = _ACTION_KINDS
    """which alert events trigger the action (default: raised and escalated)"""

    @field_validator("node_id")
    @classmethod
    def _node(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_node_id(value):
            raise ValueError("must be 1..32 characters of [A-Za-z0-9._-]")
        return value

    @field_validator("args")
    @classmethod
    def _args(cls, value: dict[str, ArgValue]) -> dict[str, ArgValue]:
        if len(value) > _MAX_ARGS:
            raise ValueError(f"at most {_MAX_ARGS} arguments (docs/protocol.md §3)")
        for name, arg in value.items():
            if not 0 < len(name) <= 32 or any(c not in NODE_ID_ALPHABET for c in name):
                raise ValueError(f"argument name {name!r} is not 1..32 of [A-Za-z0-9._-]")
            if isinstance(arg, str) and (len(arg) > _MAX_ARG_STR or not arg.isprintable()):
                raise ValueError(f"argument {name!r}: at most 64 printable characters")
            if isinstance(arg, float) and not math.isfinite(arg):
                raise ValueError(f"argument {name!r} must be a finite number")
        return value

    @model_validator(mode="after")
    def _required_args(self) -> NodeActionConfig:
        if self.command == "actuate":
            if not isinstance(self.args.get("output"), str):
                raise ValueError("args.output: actuate needs the output's name (a string)")
            if not isinstance(self.args.get("state"), bool):
                raise ValueError("args.state: actuate needs state = true or false")
        if self.command == "set_threshold":
            threshold = self.args.get("threshold")
            if isinstance(threshold, bool) or not isinstance(threshold, int | float):
                raise ValueError("args.threshold: set_threshold needs a number")
        return self

    @property
    def command_kind(self) -> CommandKind:
        return CommandKind[self.command.upper()]

    def matches(self, event: AlertEvent) -> bool:
        return (self.rule is None or self.rule == event.alert.rule) and self.wants(event)


class NodeActionsConfig(_Section):
    """Commands sent to nodes when alert events happen (stop a motor, sound a buzzer)."""

    actions: tuple[NodeActionConfig, ...] = ()
    """commands sent to nodes on alert events, one [[outputs.node_actions.actions]] table each"""
    max_attempts: int = Field(5, ge=1, description="per command, while the node has no link")
    retry_interval_s: float = Field(2.0, gt=0)
    """how often an undelivered command is tried again"""
    queue_max_commands: int = Field(256, ge=1)
    """commands waiting for delivery; beyond this the oldest is dropped and logged"""


class ScriptHookConfig(_EventFilter):
    """Run a local executable per event: event JSON on stdin, FIELDGATE_* in its env."""

    enabled: bool = False
    """run a local executable per alert event (event JSON on stdin)"""
    path: Path | None = None
    """the executable; must exist and be executable when enabled"""
    args: tuple[str, ...] = ()
    """arguments passed to it"""
    # The script does not inherit the gateway's environment (which may hold secrets
    # such as FIELDGATE_OUTPUTS__EMAIL__PASSWORD); it gets PATH, LANG, these and the
    # event's FIELDGATE_* variables.
    env: dict[str, str] = Field(default_factory=dict)
    """extra environment variables for it"""
    timeout_s: float = Field(10.0, gt=0)
    """a run taking longer is killed and counted as failed"""
    max_concurrent: int = Field(2, ge=1)
    """runs at the same time"""
    queue_max_events: int = Field(256, ge=1)
    """events waiting for a run; beyond this the oldest is dropped and logged"""

    @model_validator(mode="after")
    def _runnable(self) -> ScriptHookConfig:
        if not self.enabled:
            return self
        if self.path is None:
            raise ValueError("path: required when the script hook is enabled")
        if not self.path.is_file():
            raise ValueError(f"path: {self.path} is not a file")
        if not os.access(self.path, os.X_OK):
            raise ValueError(f"path: {self.path} is not executable (chmod +x)")
        return self


class WebhookConfig(_EventFilter):
    """HTTP POST of each event's JSON through the durable outbox."""

    enabled: bool = False
    """HTTP POST of each alert event's JSON, through the durable outbox"""
    url: str | None = None
    """where to POST"""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """extra request headers (secret values, e.g. Authorization)"""
    timeout_s: float = Field(10.0, gt=0)
    """request timeout"""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must look like https://host/path")
        return value

    @model_validator(mode="after")
    def _complete(self) -> WebhookConfig:
        if self.enabled and self.url is None:
            raise ValueError("url: required when the webhook is enabled")
        for name in self.headers:
            if name.lower() in ("idempotency-key", "content-type"):
                raise ValueError(f"headers.{name}: set by fieldgate, cannot be overridden")
        return self


class EmailConfig(_EventFilter):
    """E-mail through an SMTP relay, through the durable outbox."""

    enabled: bool = False
    """e-mail alert events through an SMTP relay, through the durable outbox"""
    host: str | None = None
    """SMTP relay host"""
    port: int = Field(587, ge=1, le=65535)
    """SMTP relay port"""
    starttls: bool = True
    """upgrade the connection with STARTTLS"""
    username: str | None = None
    """SMTP user (both user and password, or neither)"""
    password: SecretStr | None = None
    """SMTP password (better from FIELDGATE_OUTPUTS__EMAIL__PASSWORD)"""
    from_addr: str | None = None
    """sender address"""
    to_addrs: tuple[str, ...] = ()
    """recipients"""
    timeout_s: float = Field(30.0, gt=0)
    """SMTP timeout"""
    min_severity: SeverityName = "warning"
    """lowest severity that is e-mailed"""

    @field_validator("from_addr")
    @classmethod
    def _from(cls, value: str | None) -> str | None:
        if value is not None and "@" not in value:
            raise ValueError("must be an e-mail address")
        return value

    @field_validator("to_addrs")
    @classmethod
    def _to(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for addr in value:
            if "@" not in addr:
                raise ValueError(f"{addr!r} is not an e-mail address")
        return value

    @model_validator(mode="after")
    def _complete(self) -> EmailConfig:
        if not self.enabled:
            return self
        if not self.host:
            raise ValueError("host: required when e-mail is enabled (the SMTP relay)")
        if not self.from_addr:
            raise ValueError("from_addr: required when e-mail is enabled")
        if not self.to_addrs:
            raise ValueError("to_addrs: required when e-mail is enabled (at least one)")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password: give both or neither")
        return self


class OutboxConfig(_Section):
    """The durable outbox that webhook and e-mail deliveries go through."""

    path: Path | None = Field(None, description="SQLite file; default <data_dir>/outbox.db")
    retry_first_s: float = Field(1.0, gt=0)
    """first retry delay of a failed delivery (doubles up to retry_max_s)"""
    retry_max_s: float = Field(60.0, gt=0)
    """longest retry delay"""
    # deliver() never blocks; events wait here until the outbox writer commits them.
    queue_max_events: int = Field(10_000, ge=1)
    """events waiting to be written to the outbox; beyond this new events other than raised
    and escalated alerts are dropped and counted (alerts are always taken)"""
    max_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024)
    """undelivered notifications the outbox holds (bytes of their bodies); past it, cleared,
    acknowledged and re-notified events are refused and counted and the outbox_full system
    alert is raised; raised and escalated alerts are always taken, never dropped for room"""


class OutputsConfig(_Section):
    local_mqtt: LocalMqttOutputConfig = LocalMqttOutputConfig()
    node_actions: NodeActionsConfig = NodeActionsConfig()
    script_hook: ScriptHookConfig = ScriptHookConfig()
    webhook: WebhookConfig = WebhookConfig()
    email: EmailConfig = EmailConfig()
    outbox: OutboxConfig = OutboxConfig()

    def outbox_path(self, data_dir: Path) -> Path:
        return self.outbox.path or data_dir / "outbox.db"


def parse_outputs_config(data: Mapping[str, Any]) -> OutputsConfig:
    """Validate a raw ``[outputs]`` table, or raise ConfigError naming ``outputs.<key>``."""
    from gateway.config import _to_config_error

    try:
        return OutputsConfig.model_validate(dict(data))
    except ValidationError as exc:
        error = _to_config_error(exc)
        key = "outputs" if error.key == "<root>" else f"outputs.{error.key}"
        from gateway.errors import ConfigError

        raise ConfigError(key, error.reason) from None
