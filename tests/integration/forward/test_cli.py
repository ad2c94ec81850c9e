"""``fieldgate forward status|export|drain`` on a real backlog and a real VictoriaMetrics."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from typer.testing import CliRunner

from gateway.cli import app
from gateway.forward.backlog import Backlog
from gateway.forward.points import ALERT, SUMMARY, point
from tests.fixtures.servers import VictoriaMetrics
from tests.fixtures.victoria import samples_per_identity

T0 = 1_700_000_000_000


def _setup(tmp_path: Path, url: str) -> Path:
    backlog = Backlog(tmp_path / "forward.db").open()
    tags = {"site": "c", "node": "n1", "channel": "current", "unit": "A", "interval": "60s"}
    backlog.enqueue(point(SUMMARY, tags, {"count": i}, T0 + i * 60_000) for i in range(25))
    alert_tags = {
        "site": "c",
        "node": "n1",
        "rule": "hot",
        "severity": "warning",
        "kind": "raised",
        "alert_id": "a1",
    }
    backlog.enqueue([point(ALERT, alert_tags, {"severity_level": 1}, T0)])
    backlog.close()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'site = "c"\ndata_dir = "{tmp_path}"\n[forward]\nenabled = true\nurl = "{url}"\n'
        'token = "s3cret-token"\nbatch_max_points = 10\n'
    )
    return config


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_status_export_and_drain(tmp_path: Path, own_victoria: VictoriaMetrics) -> None:
    config = _setup(tmp_path, own_victoria.url)
    code, out = _cli("forward", "status", "-c", str(config))
    assert code == 0, out
    assert "summary" in out
    assert "25" in out
    assert "s3cret" not in out, "the token is never printed"
    code, out = _cli("forward", "status", "-c", str(config), "--json")
    data = json.loads(out)
    assert data["points"] == {"alert": 1, "event": 0, "summary": 25, "raw": 0}

    dump = tmp_path / "backlog.lp.gz"
    code, out = _cli("forward", "export", str(dump), "-c", str(config))
    assert code == 0, out
    lines = gzip.decompress(dump.read_bytes()).splitlines()
    assert len(lines) == 26
    assert lines[0].startswith(b"fieldgate_summary,")

    code, out = _cli("forward", "drain", "-c", str(config), "--timeout", "30")
    assert code == 0, out
    assert "sent 26 points" in out
    counts = samples_per_identity(own_victoria)
    assert sum(1 for k in counts if k[0] == "fieldgate_summary_count") == 25
    assert all(n == 1 for n in counts.values())
    _, out = _cli("forward", "status", "-c", str(config), "--json")
    assert json.loads(out)["points"]["summary"] == 0


def test_export_mark_delivered_advances_the_checkpoint(tmp_path: Path) -> None:
    config = _setup(tmp_path, "http://127.0.0.1:9")
    code, out = _cli(
        "forward", "export", str(tmp_path / "out.lp"), "-c", str(config), "--mark-delivered"
    )
    assert code == 0, out
    assert len((tmp_path / "out.lp").read_bytes().splitlines()) == 26
    _, out = _cli("forward", "status", "-c", str(config), "--json")
    assert sum(json.loads(out)["points"].values()) == 0
