"""The ``[forward]`` config section: where summaries go upstream and how much may wait.

Mounted on ``GatewayConfig`` as ``forward``. Off by default, so a gateway (and the
embedded demo) runs without any cloud. The token is a secret: from the environment
(``FIELDGATE_FORWARD__TOKEN``) or from ``token_file``, never printed.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gateway.errors import ConfigError

_MIB = 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ForwardBudgets(_Section):
    """Bytes the backlog may hold per class (docs/forwarding.md, eviction ladder)."""

    # raw + summaries + events together; over it the ladder runs: raw readings already
    # covered by summaries, then old summaries downsampled, then the oldest summaries.
    total_bytes: int = Field(256 * _MIB, ge=4096)
    raw_bytes: int = Field(64 * _MIB, ge=0, description="raw readings alone (oldest go first)")
    events_bytes: int = Field(32 * _MIB, ge=1024, description="node status events")
    # Alerts are never evicted; past this size the gateway warns (metric + log) only.
    alerts_bytes: int = Field(32 * _MIB, ge=1024)


class ForwardConfig(_Section):
    enabled: bool = False
    url: str = "http://127.0.0.1:8086"
    org: str = Field("fieldgate", description="InfluxDB organisation (ignored by VictoriaMetrics)")
    bucket: str = Field("fieldgate", min_length=1, description="bucket, or database")
    token: SecretStr | None = Field(None, description="from FIELDGATE_FORWARD__TOKEN")
    token_file: Path | None = Field(None, description="file holding the token (re-read on 401)")
    # Token: InfluxDB 2.x ("Authorization: Token <t>"); Bearer: InfluxDB 3 / GreptimeDB;
    # Basic: "user:password" (VictoriaMetrics -httpAuth.*, InfluxDB 1.x compatibility).
    auth_scheme: Literal["Token", "Bearer", "Basic"] = "Token"
    # Seconds would collapse two points of one series within a second into one identity.
    precision: Literal["ms", "us", "ns"] = "ms"
    """timestamp precision of the points written (the store's ?precision=)"""
    path: Path | None = Field(
        None, description="backlog SQLite file; default <data_dir>/forward.db"
    )
    interval_s: float = Field(60.0, gt=0, description="summary interval")
    late_grace_s: float = Field(10.0, ge=0, description="wait after an interval before closing it")
    batch_max_points: int = Field(5000, ge=1)
    """most points in one write request"""
    batch_max_bytes: int = Field(1_000_000, ge=1024, description="uncompressed line protocol")
    batch_max_age_s: float = Field(5.0, ge=0, description="send a partial batch after this")
    drain_max_points_per_s: float = Field(
        5000.0, ge=0, description="rate limit after an outage (0: unlimited)"
    )
    retry_first_s: float = Field(1.0, gt=0)
    retry_max_s: float = Field(300.0, gt=0)
    """longest wait between retries of a failed write (exponential backoff with jitter)"""
    timeout_s: float = Field(30.0, gt=0)
    """timeout of one write request"""
    gzip: bool = True
    """gzip the request body (cellular uplinks pay per byte)"""
    raw_channels: tuple[str, ...] = Field((), description="also forward raw readings of these")
    raw_every: int = Field(1, ge=1, description="forward 1 in N raw samples (downsampling)")
    downsample_factor: int = Field(10, ge=2, description="summaries merged per coarse point")
    budgets: ForwardBudgets = ForwardBudgets()

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must look like http(s)://host:port")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_token_source(self) -> ForwardConfig:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set token (environment) or token_file, not both")
        return self

    def backlog_path(self, data_dir: Path) -> Path:
        return self.path or data_dir / "forward.db"

    @property
    def destination(self) -> str:
        """The checkpoint key: one per store and bucket."""
        return f"{self.url}/{self.org}/{self.bucket}"

    def authorization(self) -> str | None:
        """The Authorization header value, reading ``token_file`` afresh (rotation)."""
        token: str | None = None
        if self.token is not None:
            token = self.token.get_secret_value()
        elif self.token_file is not None:
            try:
                token = self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError("forward.token_file", f"cannot read: {exc}") from None
        if not token:
            return None
        if self.auth_scheme == "Basic":
            return "Basic " + base64.b64encode(token.encode()).decode()
        return f"{self.auth_scheme} {token}"
