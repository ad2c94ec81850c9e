"""A small SKAB-layout data set the tests write themselves (the real SKAB stays outside).

Same folder layout, separator, header and label columns as SKAB v0.9; the channels are
seeded noise around SKAB-like levels with a slow drift. Each labelled file is normal for its
first 400 rows (the fit part) and then has one anomaly: the pressure and flow step (a valve
closing) and the current rises, for ``anomaly_rows`` rows, after which the pump settles back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from tinymodels.skab_data import CHANNELS

LEVELS = (0.027, 0.27, 1.9, 0.1, 88.0, 28.0, 230.0, 32.0)
SPREAD = (0.002, 0.003, 0.35, 0.05, 0.5, 0.4, 7.0, 1.0)
START = datetime(2020, 3, 9, 10, 0, 0, tzinfo=UTC)


def _frame(rng: np.random.Generator, n: int) -> np.ndarray:
    drift = np.cumsum(rng.normal(0, 0.02, (n, len(CHANNELS))), axis=0)
    return np.asarray(LEVELS) + np.asarray(SPREAD) * (rng.normal(0, 1, (n, len(CHANNELS))) + drift)


def _write(path: Path, values: np.ndarray, anomaly: np.ndarray | None, t0: datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["datetime", *CHANNELS] + (["anomaly", "changepoint"] if anomaly is not None else [])
    lines = [";".join(header)]
    cp = np.zeros_like(anomaly) if anomaly is not None else None
    if anomaly is not None and cp is not None:
        cp[1:] = anomaly[1:] & ~anomaly[:-1]
    for i, row in enumerate(values):
        stamp = (t0 + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
        cells = [stamp, *(f"{v:.6g}" for v in row)]
        if anomaly is not None and cp is not None:
            cells += [f"{float(anomaly[i]):.1f}", f"{float(cp[i]):.1f}"]
        lines.append(";".join(cells))
    path.write_text("\n".join(lines) + "\n")


def write_skab_like(
    root: Path, *, seed: int = 3, rows: int = 700, anomaly_rows: int = 120
) -> list[str]:
    """Write ``anomaly-free/anomaly-free.csv`` and one labelled file per group; returns names."""
    rng = np.random.default_rng(seed)
    _write(root / "anomaly-free" / "anomaly-free.csv", _frame(rng, 1500), None, START)
    names = []
    for k, rel in enumerate(("valve1/0.csv", "valve2/0.csv", "other/1.csv")):
        v = _frame(rng, rows)
        lab = np.zeros(rows, dtype=bool)
        onset = 450 + 30 * k
        lab[onset : onset + anomaly_rows] = True
        step = np.zeros(len(CHANNELS))
        step[CHANNELS.index("Pressure")] = -6 * SPREAD[CHANNELS.index("Pressure")]
        step[CHANNELS.index("Volume Flow RateRMS")] = (
            -8 * SPREAD[CHANNELS.index("Volume Flow RateRMS")]
        )
        step[CHANNELS.index("Current")] = 4 * SPREAD[CHANNELS.index("Current")]
        v[lab] += step
        _write(root / rel, v, lab, START + timedelta(days=k + 1))
        names.append(rel)
    return names
