"""Optional TLS: a self-signed certificate made on first start, its fingerprint logged, the
same certificate reused on the next start, Secure cookies and HSTS."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest

from dashboards.tls import fingerprint
from tests.fixtures.dashboard import login, running_dashboard


async def test_tls_with_a_self_signed_certificate_made_on_first_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dashboards.tls")
    cert = tmp_path / "var" / "web" / "dashboard.crt"
    async with running_dashboard(tmp_path, web={"tls": True}) as dash:
        assert dash.url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(cert))  # trust exactly this certificate
        async with dash.client(verify=trusted) as client:
            response = await login(client, "viewer")
            assert "Secure" in response.headers["set-cookie"]
            page = await client.get("/")
            assert page.status_code == 200
            assert page.headers["strict-transport-security"].startswith("max-age=")
    first = fingerprint(cert)
    logged = [r.getMessage() for r in caplog.records if "fingerprint" in r.getMessage()]
    assert logged == [f"dashboard: TLS certificate SHA-256 fingerprint {first}"]
    assert (tmp_path / "var" / "web" / "dashboard.key").stat().st_mode & 0o077 == 0

    async with running_dashboard(tmp_path, web={"tls": True}, seed=False):
        pass
    assert fingerprint(cert) == first  # kept, not made again
