"""The soak's report: report.json and PNG plots of throughput, latency, RSS and backlog."""

from __future__ import annotations

import json
from pathlib import Path

from bench.soak.checker import JournalReading
from bench.soak.monitor import Sample
from bench.soak.stack import Stack


def write_report(
    out: Path,
    *,
    result: dict[str, object],
    samples: list[Sample],
    journal: list[JournalReading],
    faults: list[tuple[float, str, float]],
    stack: Stack,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=1, default=str))
    t0 = stack.gateway.lives[0][0] if stack.gateway.lives else 0.0
    mon_t0 = samples[0].t if samples else 0.0
    marks = [(t - t0, kind, secs) for t, kind, secs in faults]
    t = [s.t - mon_t0 for s in samples]

    def shade(ax) -> None:  # type: ignore[no-untyped-def]
        for start, kind, secs in marks:
            ax.axvspan(start, start + max(secs, 0.5), color="tab:red", alpha=0.12, lw=0)
            if len(marks) > 30:  # a long run: shading only, names would overlap
                continue
            ax.text(start, 1.0, kind, rotation=90, va="top", fontsize=6,
                    transform=ax.get_xaxis_transform())  # fmt: skip
        ax.set_xlabel("s")
        ax.grid(alpha=0.3)

    def save(fig, name: str) -> None:  # type: ignore[no-untyped-def]
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 3.5))
    # Over 5 s: nodes send a batch every 2.5 s, so per-second rates only show the batching.
    w = 5
    pairs = list(zip(samples, samples[w:], strict=False))
    rate_in = [max(b.readings - a.readings, 0) / (b.t - a.t) for a, b in pairs]
    rate_out = [max(b.delivered_through - a.delivered_through, 0) / (b.t - a.t) for a, b in pairs]
    ax.plot(t[w:], rate_in, label="readings committed /s (journal, 5 s mean)")
    ax.plot(t[w:], rate_out, label="points delivered /s (store, 5 s mean)", alpha=0.7)
    ax.set_title("throughput")
    ax.legend(fontsize=7)
    shade(ax)
    save(fig, "throughput.png")

    fig, ax = plt.subplots(figsize=(10, 3.5))
    if journal:
        first = min(r.rx_ms for r in journal)
        offset = (samples[0].t - mon_t0) if samples else 0.0
        bins: dict[int, list[float]] = {}
        for r in journal:
            bins.setdefault((r.rx_ms - first) // 5000, []).append((r.rx_ms - r.ts_ms) / 1000)
        xs = sorted(bins)
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            ys = [sorted(bins[x])[min(int(q * len(bins[x])), len(bins[x]) - 1)] for x in xs]
            ax.plot([x * 5 + offset for x in xs], ys, label=f"{label} node -> journal (s)")
    ax.set_title("latency: receive time minus reading time, per 5 s")
    ax.legend(fontsize=7)
    shade(ax)
    save(fig, "latency.png")

    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(
        t, [s.rss_mb if s.rss_mb is not None else float("nan") for s in samples], label="RSS MB"
    )
    ax2 = ax.twinx()
    ax2.plot(t, [s.fds if s.fds is not None else float("nan") for s in samples],
             color="tab:green", alpha=0.6, label="open fds")  # fmt: skip
    ax.set_title("gateway RSS (MB) and open fds (right); gaps are restarts")
    shade(ax)
    save(fig, "rss.png")

    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(t, [s.backlog_points for s in samples], label="points waiting")
    ax.set_title("forwarding backlog (points in forward.db)")
    shade(ax)
    save(fig, "backlog.png")
