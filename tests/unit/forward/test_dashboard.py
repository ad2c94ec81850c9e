"""Every query of the Grafana dashboard names a measurement, field and tags the forwarder
writes (taken from gateway.forward.points.SCHEMA, the forwarder's own list).

With VictoriaMetrics (or any Prometheus-compatible reader of line protocol) a field ``f`` of
measurement ``m`` is the metric ``m_f``, and tags are labels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.forward.points import SCHEMA, Measurement

DASHBOARD = Path(__file__).parents[3] / "dashboards" / "grafana" / "fieldgate.json"
_METRIC = re.compile(r"\bfieldgate_[a-z0-9_]+")
_SELECTOR = re.compile(r"\{([^}]*)\}")
_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def _queries(dash: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(where, expression, legend) of every query: panels, variables, annotations."""
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"], target.get("legendFormat", "")
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            yield f"${var['name']}", var["query"]["query"], ""
    for ann in dash["annotations"]["list"]:
        yield f"annotation {ann['name']}", ann["expr"], ann.get("titleFormat", "")


def _measurement_of(metric: str) -> tuple[Measurement, str] | None:
    for m in SCHEMA.values():
        field = metric.removeprefix(m.name + "_")
        if field != metric and field in m.fields:
            return m, field
    return None


def _labels(expr: str, legend: str) -> set[str]:
    found = {name for sel in _SELECTOR.findall(expr) for name in _LABEL.findall(sel)}
    found |= {
        name.strip() for group in _BY.findall(expr) for name in group.split(",") if name.strip()
    }
    found |= set(_LEGEND.findall(legend))
    if m := re.search(r"label_values\([^,]*,\s*([a-zA-Z_]+)\)", expr):
        found.add(m.group(1))
    return found - {"__name__"}


QUERIES = list(_queries(json.loads(DASHBOARD.read_text())))


def test_the_dashboard_has_the_five_views() -> None:
    titles = " ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]).lower()
    for view in (
        "fleet overview",
        "per-node summaries",
        "anomaly scores",
        "alert timeline",
        "data quality",
    ):
        assert view in titles


@pytest.mark.parametrize(("where", "expr", "legend"), QUERIES, ids=[q[0] for q in QUERIES])
def test_every_query_names_what_the_forwarder_writes(where: str, expr: str, legend: str) -> None:
    metrics = _METRIC.findall(expr)
    assert metrics, f"{where}: names no fieldgate metric: {expr}"
    tags: set[str] = set()
    for metric in metrics:
        found = _measurement_of(metric)
        assert found is not None, f"{where}: {metric} is no measurement_field the forwarder writes"
        tags |= set(found[0].tags)
    unknown = _labels(expr, legend) - tags
    assert not unknown, f"{where}: labels {unknown} are not tags of {metrics}"


def test_every_summary_measurement_is_on_the_dashboard() -> None:
    used = {found[0].name for _, expr, _ in QUERIES for metric in _METRIC.findall(expr)
            if (found := _measurement_of(metric))}  # fmt: skip
    assert used >= {"fieldgate_summary", "fieldgate_score", "fieldgate_alert", "fieldgate_alert_count",
                    "fieldgate_quality", "fieldgate_node_status", "fieldgate_forward"}  # fmt: skip


def test_the_check_catches_a_misspelt_field() -> None:
    assert _measurement_of("fieldgate_summary_mean") is not None
    assert _measurement_of("fieldgate_summary_median") is None
    assert _measurement_of("fieldgate_quality_completeness") is None
