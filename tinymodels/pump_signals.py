"""A tiny seeded generator of pump-like node frames for training and testing the node model.

Deliberately small and independent of the node simulator: a centrifugal pump turning at
about 24.5 Hz (vibration harmonics at 1x/2x and blade pass at 5x), motor current, outlet
pressure and casing temperature, with a few fault kinds that change them the way such
faults do (imbalance raises 1x, a bearing defect adds high-frequency impulses, cavitation
adds broadband noise and pressure ripple, a blockage raises pressure and lowers current).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tinymodels.node_features import VIB_RATE_HZ, VIB_SAMPLES

FAULTS: tuple[str, ...] = ("imbalance", "bearing", "cavitation", "blockage")
SLOW_SAMPLES = 4


@dataclass(frozen=True, slots=True)
class Frame:
    vibration: npt.NDArray[np.float64]
    current: npt.NDArray[np.float64]
    pressure: npt.NDArray[np.float64]
    temperature: npt.NDArray[np.float64]
    fault: str | None


def pump_frame(rng: np.random.Generator, fault: str | None = None, severity: float = 1.0) -> Frame:
    """One capture; operating point (speed, load, temperature) varies from frame to frame."""
    t = np.arange(VIB_SAMPLES) / VIB_RATE_HZ
    f0 = rng.uniform(23.5, 25.5)
    load = rng.uniform(0.85, 1.15)
    a1, a2, a5 = 0.8 * load, 0.3 * load, 0.25 * load
    noise = 0.08
    current = 2.2 * load
    pressure = 1.0 * load
    temp = rng.uniform(45.0, 65.0)
    p_ripple = 0.01
    impulses = np.zeros(VIB_SAMPLES)
    if fault == "imbalance":
        a1 *= 1.0 + 2.0 * severity
    elif fault == "bearing":
        period = int(VIB_RATE_HZ / rng.uniform(85.0, 110.0))
        ring = np.exp(-np.arange(12) / 3.0) * np.sin(2 * np.pi * 0.3 * np.arange(12))
        for start in range(int(rng.integers(0, period)), VIB_SAMPLES - 12, period):
            impulses[start : start + 12] += 2.5 * severity * ring
    elif fault == "cavitation":
        noise *= 1.0 + 4.0 * severity
        pressure *= 1.0 - 0.25 * severity
        p_ripple = 0.08 * severity
    elif fault == "blockage":
        pressure *= 1.0 + 0.5 * severity
        current *= 1.0 - 0.25 * severity
    phase = rng.uniform(0, 2 * np.pi, 3)
    vib = (
        a1 * np.sin(2 * np.pi * f0 * t + phase[0])
        + a2 * np.sin(2 * np.pi * 2 * f0 * t + phase[1])
        + a5 * np.sin(2 * np.pi * 5 * f0 * t + phase[2])
        + noise * rng.standard_normal(VIB_SAMPLES)
        + impulses
    )
    return Frame(
        vibration=vib,
        current=current + 0.03 * rng.standard_normal(SLOW_SAMPLES),
        pressure=pressure + p_ripple * rng.standard_normal(SLOW_SAMPLES),
        temperature=temp + np.cumsum(0.02 * rng.standard_normal(SLOW_SAMPLES)),
        fault=fault,
    )
