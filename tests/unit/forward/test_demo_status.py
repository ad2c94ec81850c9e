"""The demo's upstream status line and its [forward] section."""

from __future__ import annotations

from pathlib import Path

from gateway.config import load_config
from gateway.forward.demo import demo_forward_config, upstream_status
from gateway.forward.forwarder import Forwarder
from gateway.forward.points import ALERT, point


def test_demo_forwards_only_with_a_url() -> None:
    assert not load_config(forward=demo_forward_config(None)).forward.enabled
    cfg = load_config(forward=demo_forward_config("http://127.0.0.1:8428")).forward
    assert cfg.enabled
    assert cfg.url == "http://127.0.0.1:8428"


def test_status_line_shows_the_backlog(tmp_path: Path) -> None:
    assert upstream_status(None) == ""
    cfg = load_config(forward=demo_forward_config("http://127.0.0.1:9")).forward
    fwd = Forwarder(cfg, site="d", journal_path=tmp_path / "j.db", backlog_path=tmp_path / "f.db")
    fwd.backlog.open()
    tags = {
        "site": "d",
        "node": "n",
        "rule": "r",
        "severity": "info",
        "kind": "raised",
        "alert_id": "a",
    }
    fwd.backlog.enqueue([point(ALERT, tags, {"severity_level": 0}, t) for t in range(1200)])
    fwd.online = False
    line = upstream_status(fwd)
    fwd.backlog.close()
    fwd._executor.shutdown()  # noqa: SLF001 - the test owns this never-started forwarder
    assert "1,200 points waiting" in line
    assert "store unreachable" in line
