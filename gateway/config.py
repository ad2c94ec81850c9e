"""The one typed configuration of a gateway, validated once at start-up.

Sources, lowest priority first: built-in defaults, a TOML file, ``FIELDGATE_*``
environment variables (nested keys joined by ``__``, e.g.
``FIELDGATE_MQTT__URL=mqtt://broker:1883``). An invalid value stops start-up with
a :class:`ConfigError` naming the key path and the reason. Nothing else in
fieldgate reads ``os.environ``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.alerts.config import AlertsConfig
from gateway.errors import ConfigError
from gateway.outputs.config import OutputsConfig
from gateway.pipeline.config import ScoringConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JournalConfig(_Section):
    path: Path | None = Field(None, description="SQLite file; default <data_dir>/journal.db")
    # FULL: a committed (and so acknowledged) reading survives power loss, at one WAL
    # fsync per group commit. NORMAL survives kill -9 but may lose the last commits on
    # power loss; only choose it where the nodes keep data long enough to resend.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    raw_budget_bytes: int = Field(512 * 1024 * 1024, ge=1024 * 1024)
    max_commit_messages: int = Field(2000, ge=1, description="messages per group commit")
    retention_interval_s: float = Field(60.0, gt=0)


class QueueConfig(_Section):
    max_messages: int = Field(10_000, ge=1)
    # block: sources wait (backpressure reaches the nodes, which keep unacked data).
    # drop_newest: the message is dropped and counted; the node resends it because it
    # was never acknowledged, so nothing acknowledged is lost either way.
    overflow: Literal["block", "drop_newest"] = "block"


class MqttConfig(_Section):
    enabled: bool = True
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "fieldgate-gateway"
    keepalive_s: int = Field(30, ge=5)
    reconnect_max_s: float = Field(30.0, gt=0)
    ack_interval_s: float = Field(0.05, ge=0, description="min pause between ack rounds")
    username: str | None = None
    password: str | None = None

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ValueError("must look like mqtt://host:port")
        return value


class SerialPortConfig(_Section):
    path: str
    baud: int = Field(115_200, gt=0)


class SerialConfig(_Section):
    ports: tuple[SerialPortConfig, ...] = ()
    reopen_interval_s: float = Field(0.5, gt=0)
    max_frame_bytes: int = Field(4096, ge=64)


class BleConfig(_Section):
    enabled: bool = False
    # Bumble transport of the host controller: "usb:0" for a dongle, "tcp-client:host:port"
    # for a virtual controller exposed by another process.
    transport: str = "usb:0"
    nodes: tuple[str, ...] = Field((), description="node ids to connect to (by advertised name)")
    max_connections: int = Field(4, ge=1)
    scan_watchdog_s: float = Field(30.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    # More known nodes than connections: a connected node yields its slot after this long
    # when others wait, so every node is served in turn (None: keep a link until it drops).
    session_share_s: float | None = Field(30.0, gt=0)


class MetricsConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)


class WebConfig(_Section):
    """The maintenance dashboard (dashboards/), served by the gateway process."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # Self-signed certificate created on first start in <data_dir>/web/ (fingerprint logged).
    tls: bool = False
    # DNS rebinding: requests whose Host header is not one of these are refused.
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    session_ttl_s: float = Field(8 * 3600.0, gt=0, description="idle session lifetime")
    login_attempts_per_minute: int = Field(5, ge=1, description="bad logins per user/IP")
    live_interval_s: float = Field(1.0, gt=0, description="server-sent events period")


class GatewayConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FIELDGATE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    site: str = Field("site1", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    data_dir: Path = Path("var")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_grace_s: float = Field(5.0, gt=0)
    skew_limit_ms: int = Field(2000, gt=0)
    allowed_nodes: tuple[str, ...] = Field(
        (), description="accept only these node ids (empty: any)"
    )
    journal: JournalConfig = JournalConfig()
    queue: QueueConfig = QueueConfig()
    mqtt: MqttConfig = MqttConfig()
    serial: SerialConfig = SerialConfig()
    ble: BleConfig = BleConfig()
    metrics: MetricsConfig = MetricsConfig()
    scoring: ScoringConfig = ScoringConfig()
    alerts: AlertsConfig = AlertsConfig()
    outputs: OutputsConfig = OutputsConfig()
    web: WebConfig = WebConfig()

    @property
    def journal_path(self) -> Path:
        return self.journal.path or self.data_dir / "journal.db"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (init kwargs carry the file's content).
        return (env_settings, init_settings)


def load_config(path: Path | None = None, **overrides: Any) -> GatewayConfig:
    """Read, merge and validate the configuration, or raise ConfigError naming the key."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(str(path), "config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    data.update(overrides)
    try:
        return GatewayConfig(**data)
    except ValidationError as exc:
        raise _to_config_error(exc) from None


def _to_config_error(exc: ValidationError) -> ConfigError:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            reason = "unknown key (misspelt? see docs/configuration.md)"
        problems.append((key, reason))
    key, reason = problems[0]
    if len(problems) > 1:
        reason += "; also " + "; ".join(f"{k}: {r}" for k, r in problems[1:])
    return ConfigError(key, reason)
