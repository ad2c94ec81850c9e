"""The demo's live terminal view: node status, scores and alerts (Rich)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Literal

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from gateway.app import Gateway
from gateway.demo.scenario import (
    DEMO_ANOMALY_THRESHOLD,
    AlertLog,
    Scenario,
)
from gateway.events import AlertEventKind, Severity
from gateway.forward.demo import upstream_status
from gateway.store.journal_reader import JournalReader


def _score_text(score: float | None, threshold: float) -> Text:
    if score is None:
        return Text("-", style="dim")
    style = "bold red" if score >= threshold else "yellow" if score >= 1.0 else "green"
    return Text(f"{score:6.2f}", style=style)


# (header, justify, min width): narrow enough for a 100-column terminal.
_NODE_COLUMNS: tuple[tuple[str, Literal["left", "right"], int], ...] = (
    ("node", "left", 7),
    ("via", "left", 4),
    ("seen", "right", 5),
    ("rx", "right", 4),
    ("lost", "right", 4),
    ("mV", "right", 4),
    ("dBm", "right", 3),
    ("acked", "right", 5),
    ("gw", "right", 6),
    ("node", "right", 5),
    ("injected fault", "left", 12),
)
_SCORE_CAPTION = (
    "rx: messages in the journal · acked: what the node was told is durable · gw / node: "
    "anomaly score of the gateway model (LiteRT) / the node's own model, 1.0 = the model's "
    "threshold; the demo alerts at gw >= {threshold:g}"
)

_KIND_STYLE = {
    AlertEventKind.RAISED: "bold red",
    AlertEventKind.ACKNOWLEDGED: "yellow",
    AlertEventKind.CLEARED: "green",
    AlertEventKind.RENOTIFIED: "red",
    AlertEventKind.ESCALATED: "bold magenta",
}
_SEVERITY_STYLE = {Severity.INFO: "cyan", Severity.WARNING: "yellow", Severity.CRITICAL: "red"}


def render_alerts(log: AlertLog) -> Table:
    title = (
        f"alerts — raised {log.count(AlertEventKind.RAISED)} · cleared "
        f"{log.count(AlertEventKind.CLEARED)} · open {log.open_alerts()}"
    )
    if log.missed:
        title += f" · {log.missed} not shown (view too slow)"
    table = Table(title=title, expand=True, title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("time", "event", "node", "rule", "severity", "message"):
        table.add_column(col, no_wrap=col != "message")
    for event in reversed(log.recent):
        al = event.alert
        table.add_row(
            datetime.fromtimestamp(event.at_ms / 1000).strftime("%H:%M:%S"),
            Text(event.kind.value, style=_KIND_STYLE.get(event.kind, "")),
            al.node_id,
            al.rule,
            Text(al.severity.name.lower(), style=_SEVERITY_STYLE.get(al.severity, "")),
            al.message
            if event.kind is not AlertEventKind.CLEARED
            else Text(
                f"{al.message} (lasted {(event.at_ms - al.raised_at_ms) / 1000:.0f} s)", style="dim"
            ),
        )
    if not log.recent:
        table.add_row("", Text("none yet", style="dim"), "", "", "", "")
    return table


def render(
    reader: JournalReader,
    gateway: Gateway,
    sim_stats: dict[str, dict[str, int]],
    broker: str,
    started: float,
    *,
    scenario: Scenario | None = None,
    sim_time_s: float = 0.0,
    alerts: AlertLog | None = None,
) -> Group:
    table = Table(
        title="fieldgate — live node status" + upstream_status(gateway.forwarder),
        caption=_SCORE_CAPTION.format(threshold=DEMO_ANOMALY_THRESHOLD),
        expand=True,
        box=box.SIMPLE_HEAD,
    )
    for col, justify, width in _NODE_COLUMNS:
        table.add_column(col, justify=justify, min_width=width, no_wrap=col != "injected fault")
    now_ms = time.time() * 1000
    pipeline = gateway.pipeline
    rows = reader.nodes()
    for row in rows:
        st = sim_stats.get(row.node_id, {})
        age = (now_ms - row.last_seen_ms) / 1000
        scores = pipeline.fusion.scores(row.node_id) if pipeline is not None else None
        gw = scores.gateway.score if scores is not None and scores.gateway else None
        node = scores.node.score if scores is not None and scores.node else None
        gw_text = _score_text(gw, DEMO_ANOMALY_THRESHOLD)
        if gw is None and pipeline is not None:
            gw_text = Text("calib.", style="dim")
        table.add_row(
            row.node_id,
            row.transport,
            Text(f"{age:.1f} s", style="green" if age < 5 else "red"),
            str(row.received),
            str(row.lost),
            f"{row.battery_mv}" if row.battery_mv else "-",
            f"{row.rssi_dbm}" if row.rssi_dbm is not None else "-",
            str(st.get("acked", "-")),
            gw_text,
            _score_text(node, 1.0),
            scenario.describe(row.node_id, sim_time_s) if scenario else Text("-"),
        )
    m = gateway.metrics
    dups = sum(row.duplicates for row in rows)
    footer = Text(
        f"uptime {time.monotonic() - started:5.0f} s · sim time {sim_time_s:5.0f} s · broker "
        f"{broker} · journal {gateway.config.journal_path} · commits {m.commits} · malformed "
        f"{sum(m.malformed.values())} · duplicates {dups} · queue {gateway.queue.qsize()} · "
        "Ctrl-C to stop",
        style="dim",
    )
    parts: list[Any] = [table]
    if alerts is not None:
        parts.append(render_alerts(alerts))
    parts.append(footer)
    return Group(*parts)
