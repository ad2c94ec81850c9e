"""Reading SKAB CSV files without pandas.

SKAB files are ``;``-separated: a ``datetime`` column, the eight sensor channels
and, in the labelled experiments, ``anomaly`` and ``changepoint`` (0.0/1.0 per
row). The anomaly-free file has the channels only.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

CHANNELS: tuple[str, ...] = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class SkabFile:
    """One SKAB experiment: timestamps (s since epoch), channel values and labels."""

    name: str  # path relative to the data directory, e.g. "valve1/0.csv"
    t_s: IntArray  # (n,)
    values: FloatArray  # (n, 8) in CHANNELS order
    anomaly: BoolArray | None  # (n,) None for the anomaly-free file
    changepoint: BoolArray | None


def load_skab_csv(path: Path, name: str | None = None) -> SkabFile:
    """Parse one SKAB CSV; raises ``ValueError`` naming the file if a column is missing."""
    with path.open(newline="") as fh:
        reader = csv.reader(fh, delimiter=";")
        header = next(reader)
        rows = [r for r in reader if r]
    col = {h.strip(): i for i, h in enumerate(header)}
    missing = [c for c in ("datetime", *CHANNELS) if c not in col]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; is this a SKAB file?")
    t = np.array([r[col["datetime"]] for r in rows], dtype="datetime64[s]").astype(np.int64)
    values = np.array([[float(r[col[c]]) for c in CHANNELS] for r in rows], dtype=np.float64)
    anomaly = changepoint = None
    if "anomaly" in col and "changepoint" in col:
        anomaly = np.array([float(r[col["anomaly"]]) > 0.5 for r in rows], dtype=np.bool_)
        changepoint = np.array([float(r[col["changepoint"]]) > 0.5 for r in rows], dtype=np.bool_)
    return SkabFile(
        name=name or path.name, t_s=t, values=values, anomaly=anomaly, changepoint=changepoint
    )


def labelled_files(data_dir: Path) -> list[Path]:
    """Every CSV under ``data_dir`` that carries labels, sorted by relative path."""
    out = []
    for p in sorted(data_dir.rglob("*.csv")):
        with p.open() as fh:
            header = fh.readline()
        if "anomaly" in header and "changepoint" in header:
            out.append(p)
    return out
