"""The node page's live score chart keeps a bounded, ordered window of each node's scores."""

from __future__ import annotations

import tracemalloc

from dashboards.view import POINTS_PER_NODE, LiveScores
from gateway.events import AnomalyScore, ScoreSource


def score(
    node: str, t_ms: int, value: float, source: ScoreSource = ScoreSource.GATEWAY
) -> AnomalyScore:
    return AnomalyScore(node, t_ms, source, value, "1.0.0", ())


def test_points_come_back_oldest_first_and_only_those_newer_than_asked() -> None:
    live = LiveScores()
    live([score("pump-01", t, t / 10) for t in range(1, 11)])
    assert live.since("pump-01", ScoreSource.GATEWAY, 7) == [(8, 0.8), (9, 0.9), (10, 1.0)]
    assert live.latest("pump-01", ScoreSource.GATEWAY) == 1.0
    assert live.since("pump-01", ScoreSource.FUSED, 0) == []
    assert live.latest("pump-02", ScoreSource.GATEWAY) is None


def test_after_the_window_is_full_the_oldest_points_make_room_in_order() -> None:
    live = LiveScores()
    total = POINTS_PER_NODE * 2 + 7
    live([score("pump-01", t, float(t)) for t in range(total)])
    kept = live.since("pump-01", ScoreSource.GATEWAY, -1)
    assert [t for t, _ in kept] == list(range(total - POINTS_PER_NODE, total))
    assert live.latest("pump-01", ScoreSource.GATEWAY) == float(total - 1)


def test_a_site_of_500_nodes_with_full_windows_holds_its_scores_in_a_few_megabytes() -> None:
    # Held as a deque of (t, score) tuples the same window took about 100 MB.
    live = LiveScores()
    sources = (ScoreSource.GATEWAY, ScoreSource.NODE, ScoreSource.FUSED)
    tracemalloc.start()
    try:
        for t in range(POINTS_PER_NODE):
            live(
                [
                    score(f"n{n:03d}", 1_700_000_000_000 + t, 0.5, s)
                    for n in range(500)
                    for s in sources
                ]
            )
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 20_000_000, f"{held / 1e6:.1f} MB"
