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
    model_config = ConfigDict(extra="forbid", frozen=True)


class _EventFilter(_Section):
    """Which events an output takes: by kind and minimum severity."""

    kinds: tuple[EventKindName, ...] = ALL_KINDS
    min_severity: SeverityName = "info"

    def wants(self, event: AlertEvent) -> bool:
        return event.kind.value in self.kinds and event.alert.severity >= severity_of(
            self.min_severity
        )


def _mqtt_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ValueError("must look like mqtt://host:port")
    return value


class LocalMqttOutputConfig(_EventFilter):
    """Alert events to the site's own broker, for sirens, relays and PLCs."""

    enabled: bool = False
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "fieldgate-alerts"
    topic_prefix: str = Field("fieldgate", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    qos: Literal[0, 1, 2] = 1
    # retain: a PLC that (re)connects sees the latest event of each node at once.
    retain: bool = False
    buffer_max_events: int = Field(1000, ge=1, description="held while the broker is down")
    reconnect_max_s: float = Field(30.0, gt=0)
    username: str | None = None
    password: SecretStr | None = None

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
    node_id: str | None = None
    command: CommandName
    args: dict[str, ArgValue] = Field(default_factory=dict)
    kinds: tuple[EventKindName, ...] = _ACTION_KINDS

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
    actions: tuple[NodeActionConfig, ...] = ()
    max_attempts: int = Field(5, ge=1, description="per command, while the node has no link")
    retry_interval_s: float = Field(2.0, gt=0)
    queue_max_commands: int = Field(256, ge=1)


class ScriptHookConfig(_EventFilter):
    """Run a local executable per event: event JSON on stdin, FIELDGATE_* in its env."""

    enabled: bool = False
    path: Path | None = None
    args: tuple[str, ...] = ()
    # The script does not inherit the gateway's environment (which may hold secrets
    # such as FIELDGATE_OUTPUTS__EMAIL__PASSWORD); it gets PATH, LANG, these and the
    # event's FIELDGATE_* variables.
    env: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(10.0, gt=0)
    max_concurrent: int = Field(2, ge=1)
    queue_max_events: int = Field(256, ge=1)

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
    url: str | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout_s: float = Field(10.0, gt=0)

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
    host: str | None = None
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    password: SecretStr | None = None
    from_addr: str | None = None
    to_addrs: tuple[str, ...] = ()
    timeout_s: float = Field(30.0, gt=0)
    min_severity: SeverityName = "warning"

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
    path: Path | None = Field(None, description="SQLite file; default <data_dir>/outbox.db")
    retry_first_s: float = Field(1.0, gt=0)
    retry_max_s: float = Field(60.0, gt=0)
    # deliver() never blocks; events wait here until the outbox writer commits them.
    queue_max_events: int = Field(10_000, ge=1)


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
