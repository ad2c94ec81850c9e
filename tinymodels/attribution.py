"""Which channels make a gateway score high: each channel's share of T² and of the MSET
residual (numpy only).

For a row ``y`` (standardised model channels minus the PCA mean), Hotelling's T² is
``y · M y`` with ``M = P Λ⁻¹ Pᵀ``; channel ``j`` contributes ``|y_j (M y)_j|`` (the usual
T² contribution, taken in absolute value so shares are non-negative). The MSET residual
contributes ``(x_j - x̂_j)²`` per channel. Each set of contributions is normalised to sum to 1
per row and the two are averaged: a channel's *share* of the row's abnormality. (The
autoencoder's per-channel error is left out: its window mixes rows, and T² and MSET already
agree on where the deviation is.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tinymodels.gateway_features import MsetFit, PcaFit

FloatArray = npt.NDArray[np.float64]

# Model (SKAB) channel -> the short name an alert shows.
DISPLAY: dict[str, str] = {
    "Accelerometer1RMS": "vibration",
    "Accelerometer2RMS": "vibration 2",
    "Current": "current",
    "Pressure": "pressure",
    "Temperature": "temperature",
    "Thermocouple": "fluid temperature",
    "Voltage": "voltage",
    "Volume Flow RateRMS": "flow",
}


def t2_contributions(pca: PcaFit, zm: npt.ArrayLike) -> FloatArray:
    y = np.asarray(zm, dtype=np.float64) - pca.mean
    my = ((y @ pca.basis) / pca.lam) @ pca.basis.T
    return np.abs(y * my)


def mset_contributions(mset: MsetFit, zm: npt.ArrayLike) -> FloatArray:
    x = np.asarray(zm, dtype=np.float64)
    return (x - mset.estimate(x)) ** 2


def shares(parts: Sequence[FloatArray]) -> FloatArray:
    """Average of each contribution set normalised per row (rows of zeros stay zeros)."""
    if not parts:
        raise ValueError("no contributions to share")
    norm = []
    for p in parts:
        total = p.sum(axis=1, keepdims=True)
        norm.append(np.divide(p, total, out=np.zeros_like(p), where=total > 0))
    return np.mean(norm, axis=0)


def row_shares(pca: PcaFit | None, mset: MsetFit | None, zm: npt.ArrayLike) -> FloatArray | None:
    parts = []
    if pca is not None:
        parts.append(t2_contributions(pca, zm))
    if mset is not None:
        parts.append(mset_contributions(mset, zm))
    return shares(parts) if parts else None


def top_channels(
    share: npt.ArrayLike, names: Sequence[str], *, k: int = 2, min_share: float = 0.1
) -> tuple[tuple[str, float], ...]:
    """The ``k`` largest shares of at least ``min_share``, as (display name, share)."""
    s = np.asarray(share, dtype=np.float64)
    order = np.argsort(-s, kind="stable")[:k]
    return tuple(
        (DISPLAY.get(names[i], names[i]), round(float(s[i]), 3)) for i in order if s[i] >= min_share
    )


def describe(channels: Sequence[tuple[str, float]]) -> str:
    """``pressure 71 %, current 18 %``."""
    return ", ".join(f"{name} {100 * share:.0f} %" for name, share in channels)
