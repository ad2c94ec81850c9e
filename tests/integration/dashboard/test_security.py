"""The dashboard's security rules, against a real gateway serving it on loopback (issue 13).

Every route is tried as anonymous, viewer, operator and admin; state changes without the
CSRF token, requests for another Host and the sixth bad login in a minute are refused; the
first start creates an admin with a one-time password that must be changed.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx
import pytest

from tests.fixtures.dashboard import csrf_of, login, running_dashboard

pytestmark = pytest.mark.timeout(90)

ROLES = ("anonymous", "viewer", "operator", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
NODE = "pump-01"

# (method, path, least role allowed). Every route the app has, pages and API.
ROUTES = [
    ("GET", "/", "viewer"),
    ("GET", "/nodes", "viewer"),
    ("GET", f"/nodes/{NODE}", "viewer"),
    ("GET", "/alerts", "viewer"),
    ("GET", "/models", "viewer"),
    ("GET", "/settings", "viewer"),
    ("GET", "/account/password", "viewer"),
    ("POST", "/alerts/ack", "operator"),
    ("POST", "/alerts/clear", "operator"),
    ("POST", "/silences", "operator"),
    ("POST", "/settings/users", "admin"),
    ("GET", "/jobs/1", "viewer"),
    ("POST", "/models/jobs", "operator"),
    ("POST", "/models/rollback", "operator"),
    ("GET", "/api/health", "viewer"),
    ("GET", "/api/nodes", "viewer"),
    ("GET", f"/api/nodes/{NODE}", "viewer"),
    ("GET", f"/api/nodes/{NODE}/readings", "viewer"),
    ("GET", "/api/alerts", "viewer"),
    ("GET", "/api/alerts/history", "viewer"),
    ("GET", "/api/models", "viewer"),
    ("GET", "/api/openapi.json", "viewer"),
    ("POST", "/api/alerts/no-such:alert:1/acknowledge", "operator"),
    ("POST", "/api/alerts/no-such:alert:1/clear", "operator"),
    ("POST", "/api/silences", "operator"),
    ("GET", "/api/jobs", "viewer"),
    ("GET", "/api/jobs/1", "viewer"),
    ("POST", "/api/jobs", "operator"),
    ("POST", "/api/jobs/rollback", "operator"),
]
FORMS = {
    "/alerts/ack": {"alert_id": "no-such:alert:1", "comment": "x"},
    "/alerts/clear": {"alert_id": "no-such:alert:1"},
    "/silences": {"node_id": "pump-99", "minutes": "5", "reason": "matrix"},
    "/settings/users": {"name": "newbie", "role": "viewer", "password": "newbie-pass-123"},
    # The matrix's nodes are on serial ports the gateway reads: a job is refused (409), after
    # the role check has let the request through.
    "/models/jobs": {"artifact": "0" * 64, "nodes": NODE},
    "/models/rollback": {"node_id": NODE},
}
JSON_BODIES = {
    "/api/silences": {"node_id": "pump-98", "minutes": 5, "reason": "matrix"},
    "/api/jobs": {"artifact_sha256": "0" * 64, "nodes": [NODE]},
    "/api/jobs/rollback": {"nodes": [NODE]},
}


async def _request(client: httpx.AsyncClient, method: str, path: str, csrf: str) -> httpx.Response:
    if method == "GET":
        return await client.get(path)
    if path.startswith("/api/"):
        body = JSON_BODIES.get(path, {"comment": "matrix"})
        return await client.post(path, json=body, headers={"X-CSRF-Token": csrf})
    return await client.post(path, data={**FORMS[path], "csrf": csrf})


def _denied(role: str, path: str, response: httpx.Response) -> bool:
    if role == "anonymous":
        if path.startswith("/api/"):
            return response.status_code == 401
        return response.status_code == 303 and response.headers["location"].startswith("/login")
    return response.status_code == 403


async def test_every_route_allows_exactly_the_roles_it_should(tmp_path: Path) -> None:
    async with running_dashboard(tmp_path, nodes=1) as dash:
        async with dash.client() as probe:
            await login(probe, "viewer")
            while (await probe.get(f"/api/nodes/{NODE}")).status_code != 200:
                pass  # the simulated node's first message makes its pages exist
        failures = []
        streams = ("/events/overview", f"/events/nodes/{NODE}", "/events/jobs/1")
        for role in ROLES:
            async with dash.client() as client:
                csrf = ""
                if role != "anonymous":
                    assert (await login(client, role)).status_code == 303
                    csrf = csrf_of((await client.get("/alerts")).text)
                for stream in streams:
                    async with client.stream("GET", stream) as response:
                        denied = _denied(role, stream, response)
                        if denied != (role == "anonymous"):
                            failures.append((role, "GET", stream, response.status_code))
                        if not denied:
                            assert response.headers["content-type"].startswith("text/event-stream")
                for method, path, least in ROUTES:
                    response = await _request(client, method, path, csrf)
                    denied = _denied(role, path, response)
                    should_deny = RANK[role] < RANK[least]
                    assert response.status_code < 500, (role, path, response.text)
                    if denied != should_deny:
                        failures.append((role, method, path, response.status_code))
        assert failures == []
        # The matrix covers every API operation the schema describes.
        async with dash.client(headers={"Authorization": f"Bearer {dash.tokens['viewer']}"}) as c:
            schema = (await c.get("/api/openapi.json")).json()
        described = {
            (
                method.upper(),
                path.replace("{node_id}", NODE)
                .replace("{alert_id}", "no-such:alert:1")
                .replace("{job_id}", "1"),
            )
            for path, ops in schema["paths"].items()
            for method in ops
        }
        assert described <= {(m, p) for m, p, _ in ROUTES}


async def test_api_tokens_carry_the_role_of_their_user(tmp_path: Path) -> None:
    async with running_dashboard(tmp_path) as dash, dash.client() as client:

        def bearer(name: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {dash.tokens[name]}"}

        assert (await client.get("/api/nodes", headers=bearer("viewer"))).status_code == 200
        body = {"node_id": "pump-01", "minutes": 5, "reason": "token test"}
        refused = await client.post("/api/silences", json=body, headers=bearer("viewer"))
        assert refused.status_code == 403
        # No CSRF token needed with a bearer token: it is not an ambient credential.
        done = await client.post("/api/silences", json=body, headers=bearer("operator"))
        assert done.status_code == 200, done.text
        assert done.json()["who"] == "operator"
        wrong = await client.get("/api/nodes", headers={"Authorization": "Bearer fgt_wrong"})
        assert wrong.status_code == 401


async def test_state_changes_without_the_csrf_token_are_refused(tmp_path: Path) -> None:
    async with running_dashboard(tmp_path) as dash, dash.client() as client:
        await login(client, "admin")
        form = {"node_id": "pump-01", "minutes": "5", "reason": "no token"}
        assert (await client.post("/silences", data=form)).status_code == 403
        assert (await client.post("/silences", data={**form, "csrf": "forged"})).status_code == 403
        api = await client.post("/api/silences", json={**form, "minutes": 5})
        assert api.status_code == 403
        assert (await client.post("/logout")).status_code == 403
        # With the page's token the same request goes through.
        csrf = csrf_of((await client.get("/alerts")).text)
        ok = await client.post("/silences", data={**form, "csrf": csrf})
        assert ok.status_code == 303
        assert "pump-01" in (await client.get("/alerts")).text


async def test_a_request_for_another_host_is_refused(tmp_path: Path) -> None:
    async with running_dashboard(tmp_path) as dash, dash.client() as client:
        assert (await client.get("/login")).status_code == 200
        rebound = await client.get("/login", headers={"Host": "attacker.example:8080"})
        assert rebound.status_code == 400
        assert "allowed_hosts" in rebound.text
        api = await client.get("/api/health", headers={"Host": "evil.test"})
        assert api.status_code == 400


async def test_the_sixth_bad_login_in_a_minute_is_throttled(tmp_path: Path) -> None:
    async with running_dashboard(tmp_path) as dash, dash.client() as client:
        statuses = [
            (await login(client, "operator", "wrong-password")).status_code for _ in range(6)
        ]
        assert statuses == [401] * 5 + [429]
        # Throttled means not even the right password is checked now.
        right = await login(client, "operator")
        assert right.status_code == 429
        assert int(right.headers["retry-after"]) > 0


async def test_pages_send_security_headers_and_strict_cookies(tmp_path: Path) -> None:
    async with running_dashboard(tmp_path) as dash, dash.client() as client:
        response = await login(client, "viewer")
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
        page = await client.get("/")
        csp = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert not re.search(r"<script>(?!</script>)", page.text)  # no inline scripts
        assert " style=" not in page.text


async def test_first_start_logs_a_one_time_admin_password_that_must_be_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dashboards.server")
    async with running_dashboard(tmp_path, seed=False) as dash, dash.client() as client:
        logged = [r.getMessage() for r in caplog.records if "one-time password" in r.getMessage()]
        assert len(logged) == 1
        password = re.search(r"one-time password (\S+)", logged[0]).group(1)  # type: ignore[union-attr]
        assert (await login(client, "admin", "admin")).status_code == 401  # no default credentials
        response = await login(client, "admin", password)
        assert response.headers["location"] == "/account/password"
        # Until the password is changed every other page leads back to the form.
        assert (await client.get("/")).headers["location"] == "/account/password"
        assert (await client.get("/api/nodes")).status_code == 403
        csrf = csrf_of((await client.get("/account/password")).text)
        new = "a-new-admin-password"
        changed = await client.post(
            "/account/password", data={"csrf": csrf, "current": password, "new": new, "again": new}
        )
        assert changed.status_code == 303
        assert (await client.get("/")).status_code == 303  # that session ended
        assert (await login(client, "admin", new)).headers["location"] == "/"
        assert (await client.get("/")).status_code == 200
