"""The Prometheus page: the gateway's counters, per-node figures and the process, with
prometheus_client's exposition format and correct types.

Rendering has two halves so that a scrape never blocks the event loop and never reads a
dict the loop is changing: :func:`take_snapshot` copies the counters and evaluates the
gauges on the loop (cheap, no I/O), then :func:`render` builds the page in a worker thread,
including the per-node rows, which come from the journal's read-only connection.

Label sets are bounded: transports and reasons are fixed sets, rejected node ids are capped
(``BoundedCounter``), and per-node series exist only for nodes in the journal's registry
(admitted nodes), at most ``MAX_NODE_SERIES`` of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

MAX_NODE_SERIES = 1000


@dataclass(frozen=True, slots=True)
class NodeFigures:
    node_id: str
    last_seen_ms: int
    received: int
    lost: int
    completeness: float
    gateway_score: float | None = None
    node_score: float | None = None


@dataclass
class Snapshot:
    """What the loop hands to the rendering thread: plain values, nothing shared."""

    labelled: list[tuple[str, str, tuple[str, ...], dict[tuple[str, ...], float]]] = field(
        default_factory=list
    )  # (name, help, label names, values by label values): counters
    counters: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> (help, v)
    gauges: dict[str, float] = field(default_factory=dict)
    scores: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)


NodeSource = Callable[[], list[NodeFigures]]


class _Families(Collector):
    def __init__(self, snap: Snapshot, nodes: list[NodeFigures]) -> None:
        self._snap = snap
        self._nodes = nodes

    def collect(self) -> Iterator[Metric]:
        snap = self._snap
        for name, help_text, labels, values in snap.labelled:
            family = CounterMetricFamily(f"fieldgate_{name}", help_text, labels=list(labels))
            for label_values, value in sorted(values.items()):
                family.add_metric(list(label_values), value)
            yield family
        for name, (help_text, value) in sorted(snap.counters.items()):
            yield CounterMetricFamily(f"fieldgate_{name}", help_text, value=value)
        for name, value in sorted(snap.gauges.items()):
            yield GaugeMetricFamily(f"fieldgate_{name}", name.replace("_", " "), value=value)
        yield from self._node_families()

    def _node_families(self) -> Iterator[Metric]:
        nodes = self._nodes[:MAX_NODE_SERIES]
        last_seen = GaugeMetricFamily(
            "fieldgate_node_last_seen_seconds",
            "When the gateway last received anything from the node (unix time, s).",
            labels=["node"],
        )
        received = CounterMetricFamily(
            "fieldgate_node_received", "Message seqs of the node in the journal.", labels=["node"]
        )
        lost = CounterMetricFamily(
            "fieldgate_node_lost", "Message seqs of the node that never arrived.", labels=["node"]
        )
        completeness = GaugeMetricFamily(
            "fieldgate_node_completeness_ratio",
            "Share of the node's messages that reached the journal.",
            labels=["node"],
        )
        score = GaugeMetricFamily(
            "fieldgate_node_anomaly_score",
            "Latest anomaly score in threshold units (1 = the model's threshold).",
            labels=["node", "source"],
        )
        for n in nodes:
            last_seen.add_metric([n.node_id], n.last_seen_ms / 1000)
            received.add_metric([n.node_id], n.received)
            lost.add_metric([n.node_id], n.lost)
            completeness.add_metric([n.node_id], n.completeness)
            gateway, node = self._snap.scores.get(n.node_id, (n.gateway_score, n.node_score))
            if gateway is not None:
                score.add_metric([n.node_id, "gateway"], gateway)
            if node is not None:
                score.add_metric([n.node_id, "node"], node)
        yield from (last_seen, received, lost, completeness, score)


def render(snap: Snapshot, nodes: NodeSource | None) -> bytes:
    """The exposition page (call in a worker thread: the node rows read the journal)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(snap, nodes() if nodes is not None else []))
    ProcessCollector(registry=registry, namespace="fieldgate")
    return generate_latest(registry)
