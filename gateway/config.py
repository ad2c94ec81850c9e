"""The one typed configuration of a gateway, validated once at start-up.

Sources, lowest priority first: built-in defaults, a TOML file, ``FIELDGATE_*``
environment variables (nested keys joined by ``__``, e.g.
``FIELDGATE_MQTT__URL=mqtt://broker:1883``). An invalid value stops start-up with
a :class:`ConfigError` naming the key path and the reason. Nothing else in
fieldgate reads ``os.environ``.
"""

from __future__ import annotations

import logging
import os
import tomllib
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
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.alerts.config import AlertsConfig
from gateway.errors import ConfigError
from gateway.forward.config import ForwardConfig
from gateway.identity.config import NodesConfig
from gateway.outputs.config import OutputsConfig
from gateway.pipeline.config import ScoringConfig

# The config file format; bump it (and add a step to migrate_config) whenever a change
# alters what an existing file means.
CONFIG_VERSION = 2
_LOGGER = logging.getLogger(__name__)


class _Section(BaseModel):
    # A string under a field is its description (docs/configuration.md is written from them).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class JournalConfig(_Section):
    path: Path | None = Field(None, description="SQLite file; default <data_dir>/journal.db")
    # FULL: a committed (and so acknowledged) reading survives power loss, at one WAL
    # fsync per group commit. NORMAL survives kill -9 but may lose the last commits on
    # power loss; only choose it where the nodes keep data long enough to resend.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """FULL: acknowledged data survives power loss (one fsync per group commit); NORMAL: survives crashes only"""
    raw_budget_bytes: int = Field(512 * 1024 * 1024, ge=1024 * 1024)
    """journal size beyond which the oldest raw readings are evicted (and counted)"""
    max_commit_messages: int = Field(2000, ge=1, description="messages per group commit")
    # Each commit costs the same fsync, thread hand-offs, PUBACK write and scoring round
    # whether it carries one message or fifty: at a site's steady trickle (500 nodes at
    # 1 reading/s) commits of one message made that fixed cost most of the CPU per reading
    # (bench.site). A busy gateway commits back to back and never waits for this.
    min_commit_interval_s: float = Field(0.005, ge=0, le=1)
    """least time between the starts of two commits: what arrives meanwhile joins the next
    one (adds at most this to the time to durable, ack and alert; 0: commit at once). A
    reading past a threshold rule's limit is not held: its commit starts at once"""
    group_from_arrival: bool = False
    """with min_commit_interval_s: a message that arrives within the interval of the previous
    commit's start waits the interval from its own arrival, and what arrives meanwhile joins
    it (more messages per commit at a steady load; the first of each group waits the whole
    interval, so the median time to ack and alert rises by up to the interval; the bound
    stays the interval). False: it waits only until the interval since that start is over"""
    group_below_rows: int = Field(16, ge=0)
    """with min_commit_interval_s: hold a commit back only while the previous commit stored
    fewer rows than this. Grouping pays where commits are small (many nodes sending a reading
    each); once messages bring this many readings per commit, holding them only adds to the
    time to ack and alert (0: never hold)"""
    # bench.site: 500 nodes sending a reading a second each gave commits of ~3 one-reading
    # messages at the 5 ms interval, and each commit's fixed cost (fsync, thread hand-offs,
    # the PUBACK write, its loop iterations) was most of the CPU per reading. Batched
    # messages (the alert bench's load) and a lone node's messages never take this path.
    # 25 ms (12 before readings past a threshold skipped the hold): 0.11 core instead of
    # 0.12-0.16 at bench.site, and a threshold alert at a site no slower.
    trickle_commit_interval_s: float = Field(0.025, ge=0, le=1)
    """least time between two commit starts while the previous commit held two or more
    messages of one reading each (many nodes at a reading a message: a site's steady
    trickle), instead of min_commit_interval_s: adds at most this to those readings' time to
    ack (at most min_commit_interval_s, e.g. 0: that applies throughout). A reading past a
    threshold rule's limit is never held, by this or by min_commit_interval_s"""
    retention_interval_s: float = Field(60.0, gt=0)
    """how often the byte budget is enforced"""
    max_seq_jump: int = Field(100_000, ge=1)
    """a message whose seq is further than this past the highest seen of its node's boot is
    refused (not stored, not acknowledged, counted): a forged or corrupt seq would make the
    node's real data look duplicated or late"""


class QueueConfig(_Section):
    max_messages: int = Field(10_000, ge=1)
    """messages between the sources and the journal writer"""
    # block: sources wait (backpressure reaches the nodes, which keep unacked data).
    # drop_newest: the message is dropped and counted; the node resends it because it
    # was never acknowledged, so nothing acknowledged is lost either way.
    overflow: Literal["block", "drop_newest"] = "block"
    """when full, block: sources wait (backpressure to nodes/broker); drop_newest: drop and count (never acknowledged, so nodes resend)"""


class MqttConfig(_Section):
    enabled: bool = True
    """ingest from an MQTT broker"""
    url: str = "mqtt://127.0.0.1:1883"
    """broker address: mqtt://host:port, or mqtts://host:port for TLS (default port 8883)"""
    client_id: str = "fieldgate-gateway"
    """fixed client id: the broker keeps the gateway's session (and unacknowledged messages) across restarts"""
    keepalive_s: int = Field(30, ge=5)
    """MQTT keepalive"""
    reconnect_max_s: float = Field(30.0, gt=0)
    """longest wait between reconnect attempts (exponential backoff with jitter)"""
    ack_interval_s: float = Field(0.05, ge=0, description="min pause between ack rounds")
    username: str | None = None
    """broker user name (optional)"""
    password: SecretStr | None = None
    """broker password (optional; better from FIELDGATE_MQTT__PASSWORD or password_file);
    never printed or logged"""
    password_file: Path | None = None
    """file holding the broker password (e.g. a systemd credential); read at start-up,
    replaces password"""
    tls_ca_file: Path | None = None
    """mqtts: the CA that signed the broker's certificate (default: the system's CAs)"""
    tls_cert_file: Path | None = None
    """mqtts: a client certificate, for brokers that authenticate clients by certificate"""
    tls_key_file: Path | None = None
    """mqtts: the client certificate's private key"""

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme in ("mqtts", "ssl")

    @property
    def broker(self) -> tuple[str, int]:
        """(host, port) of ``url``; the port defaults to 8883 for mqtts, else 1883."""
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or (8883 if self.tls else 1883)

    @model_validator(mode="after")
    def _tls_files(self) -> MqttConfig:
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a file")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file: give both or neither")
        return self

    @model_validator(mode="after")
    def _password_from_file(self) -> MqttConfig:
        if self.password_file is None:
            return self
        try:
            secret = self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(
                f"password_file: cannot read {self.password_file}: {exc.strerror}"
            ) from None
        # Frozen model: set the field the way pydantic's own validation would have.
        object.__setattr__(self, "password", SecretStr(secret))
        return self

    def password_value(self) -> str | None:
        return self.password.get_secret_value() if self.password is not None else None

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not parts.hostname:
            raise ValueError("must look like mqtt://host:port or mqtts://host:port")
        try:
            parts.port  # noqa: B018 - urlsplit checks the range only when asked
        except ValueError:
            raise ValueError("the port must be 1-65535") from None
        return value


class SerialPortConfig(_Section):
    path: str
    """serial device, preferably a stable /dev/serial/by-id/... name"""
    baud: int = Field(115_200, gt=0)
    """line speed"""


class SerialConfig(_Section):
    ports: tuple[SerialPortConfig, ...] = ()
    """serial ports with nodes on them, one [[serial.ports]] table each"""
    reopen_interval_s: float = Field(0.5, gt=0)
    """how often a missing or failed port is tried again"""
    max_frame_bytes: int = Field(4096, ge=64)
    """longest accepted frame; longer input is discarded up to the next delimiter"""


class BleConfig(_Section):
    enabled: bool = False
    """ingest from BLE nodes"""
    transport: str = "bluez:hci0"
    """which Bluetooth stack and controller: bluez:hci0 shares the system's adapter through
    BlueZ (what a Raspberry Pi runs, beside other Bluetooth users); usb:0 takes a USB dongle
    over with the Bumble stack; tcp-client:host:port reaches a Bumble virtual controller"""

    @field_validator("transport")
    @classmethod
    def _ble_transport(cls, value: str) -> str:
        kind, _, rest = value.partition(":")
        if kind == "bluez" and not rest:
            raise ValueError("give the adapter: bluez:hci0")
        # Any other "<kind>:<spec>" is a Bumble transport (usb, tcp-client, hci-socket, ...).
        if not kind or not rest:
            raise ValueError("must be bluez:<adapter>, usb:<n> or tcp-client:<host>:<port>")
        return value

    @property
    def bluez_adapter(self) -> str | None:
        """The BlueZ adapter when the system stack is used; None for a Bumble transport."""
        kind, _, rest = self.transport.partition(":")
        return rest if kind == "bluez" else None

    nodes: tuple[str, ...] = Field((), description="node ids to connect to (by advertised name)")
    max_connections: int = Field(4, ge=1)
    """simultaneous BLE connections"""
    scan_watchdog_s: float = Field(30.0, gt=0)
    """restart scanning when no advertisement arrived for this long"""
    reconnect_max_s: float = Field(30.0, gt=0)
    """longest wait between reconnect attempts to a node"""
    # More known nodes than connections: a connected node yields its slot after this long
    # when others wait, so every node is served in turn (None: keep a link until it drops).
    session_share_s: float | None = Field(30.0, gt=0)
    """with more nodes than connections, a connected node yields its slot after this long when others wait (unset: keep links)"""


class MetricsConfig(_Section):
    enabled: bool = True
    """serve Prometheus metrics at GET /metrics"""
    host: str = "127.0.0.1"
    """address the metrics endpoint listens on"""
    port: int = Field(9464, ge=0, le=65535)
    """port of the metrics endpoint"""


class WebConfig(_Section):
    """The maintenance dashboard (dashboards/), served by the gateway process."""

    enabled: bool = False
    """serve the web dashboard (docs/dashboard.md); the first start logs a one-time admin password"""
    host: str = "127.0.0.1"
    """address the dashboard listens on (0.0.0.0 for the site LAN)"""
    port: int = Field(8080, ge=0, le=65535)
    """port of the dashboard"""
    tls: bool = False
    """HTTPS with a self-signed certificate made on first start in <data_dir>/web/ (fingerprint logged)"""
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    """names and addresses people reach the dashboard by; any other Host is refused (DNS rebinding)"""
    session_ttl_s: float = Field(8 * 3600.0, gt=0)
    """a sign-in ends after this long without a request"""
    login_attempts_per_minute: int = Field(5, ge=1)
    """failed sign-ins per client address or user name in a minute before sign-in is refused for the rest of it"""
    live_interval_s: float = Field(1.0, gt=0)
    """how often live charts and the overview get new data"""


def default_data_dir() -> Path:
    """The data directory when the config names none."""
    # Under systemd the working directory may be / or /var; StateDirectory= hands the unit its
    # own directory (a colon-separated list when several are declared: the first is ours).
    state = os.environ.get("STATE_DIRECTORY", "")
    return Path(state.split(":")[0]) if state else Path("var")


class GatewayConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FIELDGATE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    config_version: int = Field(CONFIG_VERSION, ge=1, le=CONFIG_VERSION)
    """the config format the file is written in; older formats are migrated when read (with
    a log line saying what changed), a newer one is refused"""
    site: str = Field("site1", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    """site name; MQTT topics are fieldgate/<site>/<node>/<kind>"""
    data_dir: Path = Field(default_factory=default_data_dir)
    """where the journal, alert history, baselines and outbox live; unset: systemd's
    $STATE_DIRECTORY when the service manager gives one (the shipped unit: /var/lib/fieldgate),
    else `var` under the working directory"""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """log verbosity"""
    shutdown_grace_s: float = Field(5.0, gt=0)
    """on SIGTERM, how long to drain (commit and acknowledge what arrived, flush outputs) before exiting anyway"""
    skew_limit_ms: int = Field(2000, gt=0)
    """node clocks that disagree with the gateway's by more than this are flagged and clamped"""
    allowed_nodes: tuple[str, ...] = Field(
        (), description="accept only these node ids (empty: any)"
    )
    nodes: NodesConfig = NodesConfig()
    """which nodes are admitted and from where: registry cap, new-node rate, pins (docs/security.md)"""
    journal: JournalConfig = JournalConfig()
    """the durable journal of node messages (SQLite, WAL)"""
    queue: QueueConfig = QueueConfig()
    """the bounded queue between the sources and the journal writer"""
    mqtt: MqttConfig = MqttConfig()
    """ingest from an MQTT broker"""
    serial: SerialConfig = SerialConfig()
    """ingest from nodes on serial ports (COBS+CRC frames)"""
    ble: BleConfig = BleConfig()
    """ingest from BLE nodes (GATT notifications and adverts)"""
    metrics: MetricsConfig = MetricsConfig()
    """the Prometheus metrics endpoint"""
    scoring: ScoringConfig = ScoringConfig()
    """local anomaly scoring with the gateway model (docs/scoring.md)"""
    alerts: AlertsConfig = AlertsConfig()
    """local alert rules, re-notification, escalation, maintenance windows (docs/alerts.md)"""
    outputs: OutputsConfig = OutputsConfig()
    """where alert events go: local MQTT, node commands, script hook, webhook, e-mail (docs/outputs.md)"""
    forward: ForwardConfig = ForwardConfig()
    """summaries, alerts and events into a time-series store, store-and-forward (docs/forwarding.md)"""
    web: WebConfig = WebConfig()
    """the maintenance dashboard (docs/dashboard.md)"""

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
        data = migrate_config(data, str(path))
    data.update(overrides)
    try:
        return GatewayConfig(**data)
    except ValidationError as exc:
        raise _to_config_error(exc) from None


def migrate_config(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A config file's content in the current format; a file without ``config_version`` is
    format 1 (every release before the key existed). Never silently misread: each change
    that alters what a file means is applied here and logged."""
    version = data.get("config_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError("config_version", f"must be a whole number from 1 to {CONFIG_VERSION}")
    if version > CONFIG_VERSION:
        raise ConfigError(
            "config_version",
            f"{where} is written for a newer fieldgate (format {version}); this one reads "
            f"formats 1-{CONFIG_VERSION}: upgrade fieldgate, or use a config for this release",
        )
    data = dict(data)
    if version < 2:  # format 2: ble.transport's default became the system's BlueZ
        ble = data.get("ble")
        if isinstance(ble, dict) and "transport" not in ble:
            data["ble"] = {**ble, "transport": "usb:0"}
            _LOGGER.warning(
                "%s: config format 1: ble.transport kept at that format's default usb:0 "
                "(format 2 defaults to bluez:hci0); set it and config_version = %d to silence this",
                where,
                CONFIG_VERSION,
            )
    data["config_version"] = CONFIG_VERSION
    return data


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
