"""What ``fieldgate demo --influx URL`` needs from the forwarder: its config and a status line."""

from __future__ import annotations

from typing import Any

from gateway.forward.forwarder import Forwarder


def demo_forward_config(url: str | None) -> dict[str, Any]:
    """The demo's ``[forward]`` section: off without a URL; short intervals so a few minutes
    of demo show several summaries."""
    if url is None:
        return {"enabled": False}
    return {"enabled": True, "url": url, "interval_s": 10.0, "late_grace_s": 2.0}


def upstream_status(forwarder: Forwarder | None) -> str:
    """`` · upstream: ...`` for the demo's status title ('' when not forwarding)."""
    if forwarder is None:
        return ""
    counts, sizes = forwarder.backlog.counts()
    waiting, size = sum(counts.values()), sum(sizes.values())
    state = {None: "connecting", True: "store reachable", False: "store unreachable"}[
        forwarder.online
    ]
    age = forwarder.oldest_age_s()
    oldest = f", oldest {age:.0f} s" if waiting else ""
    return (
        f" · upstream: {waiting:,} points waiting ({size / 1024:.0f} KiB{oldest}),"
        f" {forwarder.delivered_points:,} sent, {state}"
    )
