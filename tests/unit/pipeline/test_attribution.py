"""Each gateway score names its top contributing channels, and an anomaly alert says them
(issue 16: "anomaly 6.2 (pressure 71 %, current 18 %)")."""

from __future__ import annotations

import numpy as np

from gateway.alerts.config import load_alerts_config
from gateway.alerts.engine import AlertEngine
from gateway.events import AnomalyScore, ScoreSource
from gateway.pipeline.windows import NodeStream, Row
from tinymodels.attribution import describe, row_shares, top_channels
from tinymodels.gateway_features import MsetFit, PcaFit
from tinymodels.runtime import load_model

NAMES = ("Accelerometer1RMS", "Current", "Pressure", "Volume Flow RateRMS")


def _normal(rng: np.random.Generator, n: int, dims: int) -> np.ndarray:
    common = rng.normal(0, 1, (n, 1))
    return 0.6 * common + 0.8 * rng.normal(0, 1, (n, dims))


def test_a_row_off_normal_in_one_channel_puts_most_of_its_share_there() -> None:
    rng = np.random.default_rng(1)
    fit = _normal(rng, 400, 4)
    pca, mset = PcaFit.fit(fit, 0.9), MsetFit.fit(fit, 80)
    row = _normal(rng, 1, 4)
    row[0, 2] += 6.0  # pressure
    share = row_shares(pca, mset, row)
    assert share is not None
    assert share.sum() == np.float64(1.0) or abs(share.sum() - 1.0) < 1e-9
    top = top_channels(share[0], NAMES)
    assert top[0][0] == "pressure"
    assert top[0][1] > 0.5
    assert describe(top).startswith("pressure ")


def test_the_streaming_scorer_attaches_the_channels_of_a_pressure_step() -> None:
    model = load_model()
    cfg = model.feature_config
    assert cfg is not None
    rng = np.random.default_rng(4)
    level = np.array([0.027, 0.27, 1.9, 0.1, 88.0, 28.0, 230.0, 32.0])
    spread = np.array([0.002, 0.003, 0.35, 0.05, 0.5, 0.4, 7.0, 1.0])
    rows = level + spread * rng.normal(0, 1, (500, 8))
    rows[400:, 3] -= 8 * spread[3]  # pressure drops (a valve closing)
    stream = NodeStream("pump-1", cfg, 400)
    prepared = stream.prepare(
        model, [Row("pump-1", i * 1000, tuple(r)) for i, r in enumerate(rows)]
    )
    assert prepared is not None
    assert prepared.shares is not None
    names = cfg.model_channels or cfg.channels
    tops = [top_channels(s, names) for s in prepared.shares[20:]]
    assert sum(t[0][0] == "pressure" for t in tops if t) > 0.8 * len(tops)


def test_an_anomaly_alert_names_the_channels_behind_its_peak_score() -> None:
    eng = AlertEngine(
        load_alerts_config(
            {"use_default_rules": False, "rules": {"gw": {"kind": "anomaly", "min_duration_s": 2}}}
        )
    )

    def score(t_s: float, value: float, channels: tuple[tuple[str, float], ...]) -> list:
        return eng.observe(
            AnomalyScore("pump-1", int(t_s * 1000), ScoreSource.GATEWAY, value, "2.0.0", channels)
        )

    score(0, 2.0, (("current", 0.6),))
    score(1, 6.2, (("pressure", 0.71), ("current", 0.18)))
    (raised,) = score(2, 5.0, (("pressure", 0.8),))
    assert raised.alert.message == (
        "gateway anomaly score 6.2 >= 1 (x model threshold; pressure 71 %, current 18 %)"
    )
