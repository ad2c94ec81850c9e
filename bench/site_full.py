"""``python -m bench.site --full``: the site benchmark with the rest of a site switched on.

Beside the 500 MQTT nodes of :mod:`bench.site`, the gateway also

* forwards summaries into a real VictoriaMetrics (Debian's, on loopback, its own data dir),
  with ``forward.interval_s = 10`` so a 20 s window holds whole intervals (production's
  60 s sends about a sixth of these bytes per second: the same points per interval);
* serves the dashboard (``[web]``), which a signed-in client polls once a second (the
  overview, the node list and the node/alert APIs, as an open browser tab would).

``upstream_kb_s`` is what VictoriaMetrics' HTTP listener read over the measuring window
(its ``vm_tcplistener_read_bytes_total``: request headers and gzip bodies, as on the wire),
minus this module's own reads of that metric. The dashboard polls are timed and their
p95 printed; the polling client runs in this (the bench's) process, not the gateway's.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from pathlib import Path

import httpx

from dashboards.users import Role, UserStore, web_db_path
from tests.fixtures.ports import free_port
from tests.fixtures.servers import VictoriaMetrics

USER, PASSWORD = "bench", "bench-password-1"
PAGES = ("/", "/nodes", "/api/nodes", "/api/alerts", "/api/health")
INTERVAL_S = 10


class FullSite:
    """VictoriaMetrics, the dashboard user and the poller for one ``bench.site --full`` run."""

    def __init__(self, workdir: Path, data_dir: Path) -> None:
        self.vm = VictoriaMetrics(workdir / "vm")
        self.web_port = free_port()
        self.data_dir = data_dir
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.poll_ms: list[float] = []
        self.poll_errors = 0
        self._bytes0 = 0.0
        self._t0 = 0.0

    def start(self) -> None:
        self.vm.start()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        users = UserStore(web_db_path(self.data_dir))
        try:
            users.add(USER, Role.ADMIN, PASSWORD)
        finally:
            users.close()

    def config(self) -> str:
        """The TOML sections to append to the gateway's config."""
        return (
            f'[forward]\nenabled = true\nurl = "{self.vm.url}"\ninterval_s = {INTERVAL_S}\n'
            f"late_grace_s = 2\n"
            f"[web]\nenabled = true\nport = {self.web_port}\n"
        )

    def begin(self) -> None:
        """Start polling the dashboard and the upstream byte count (the window opens)."""
        self._poller = threading.Thread(target=self._poll, name="bench-site-dashboard")
        self._poller.start()
        self._bytes0, self._t0 = self._vm_read_bytes(), time.monotonic()

    def upstream_kb_s(self) -> float:
        """KB/s the store received since :meth:`begin`; closes the window (polling stops)."""
        self._stop.set()
        return (self._vm_read_bytes() - self._bytes0) / (time.monotonic() - self._t0) / 1000

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
        self.vm.stop()

    def points_stored(self) -> int:
        """Samples VictoriaMetrics holds from this site (a check that forwarding worked)."""
        return sum(len(s["timestamps"]) for s in self.vm.export('{__name__=~"fieldgate_.*"}'))  # type: ignore[arg-type,misc]

    def _vm_read_bytes(self) -> float:
        # Our own GET of /metrics is read by the listener too: a few hundred bytes, counted
        # once at each end of the window, against tens of KB of writes.
        with urllib.request.urlopen(f"{self.vm.url}/metrics", timeout=10) as resp:
            body = resp.read().decode()
        return sum(
            float(m[1])
            for m in re.finditer(r"^vm_tcplistener_read_bytes_total\{[^}]*\} (\S+)$", body, re.M)
        )

    def _poll(self) -> None:
        base = f"http://127.0.0.1:{self.web_port}"
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=base, timeout=30) as client:
            while not self._stop.is_set():  # the dashboard comes up with the gateway
                try:
                    form = client.get("/login")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            else:
                return
            csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            signed_in = client.post(
                "/login", data={"username": USER, "password": PASSWORD, "csrf": csrf, "next": "/"}
            )
            assert signed_in.status_code == 303, signed_in.status_code
            while not self._stop.wait(1.0):
                for page in PAGES:
                    t0 = time.perf_counter()
                    try:
                        response = client.get(page)
                    except httpx.TransportError:
                        self.poll_errors += 1
                        continue
                    self.poll_ms.append((time.perf_counter() - t0) * 1000)
                    if response.status_code != 200:
                        self.poll_errors += 1

    def p95_ms(self) -> float:
        if not self.poll_ms:
            return float("nan")
        ordered = sorted(self.poll_ms)
        return ordered[min(int(0.95 * len(ordered)), len(ordered) - 1)]
