"""The node model's inputs: a short window of the node's own slow channels (numpy only).

What a pump node measures at its own rate (about 1 Hz): vibration RMS, motor current, outlet
pressure and flow. SKAB's ``Accelerometer1RMS``, ``Current``, ``Pressure`` and ``Volume Flow
RateRMS`` are exactly that, and the simulator's pump has the same four (``vib_rms``,
``current``, ``pressure``, ``flow``). The node standardises each channel with the mean and
standard deviation of its own first ``fit_rows`` readings after boot (Welford accumulators,
no stored rows), with a per-channel floor on the deviation, clips, and feeds the last
``window`` rows flattened row-major (oldest first) to the int8 autoencoder. Its score is the
mean squared reconstruction error divided by ``threshold`` (the manifest's), so 1.0 is the
model's own threshold, the unit the gateway's scores use too.

Firmware ports and the simulator (:mod:`firmware_tools.sim.tflm`) follow this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

# Input channel (SKAB name) -> the node channel names that feed it on a node.
NODE_CHANNELS: dict[str, tuple[str, ...]] = {
    "Accelerometer1RMS": ("vib_rms", "vib_rms_1", "Accelerometer1RMS"),
    "Current": ("current", "Current"),
    "Pressure": ("pressure", "Pressure"),
    "Volume Flow RateRMS": ("flow", "Volume Flow RateRMS"),
}


@dataclass(frozen=True, slots=True)
class NodeWindowConfig:
    channels: tuple[str, ...]  # SKAB names, in input order
    window: int
    fit_rows: int
    std_floor: tuple[float, ...]
    clip: float
    threshold: float = 1.0  # raw reconstruction MSE that means 1.0

    @property
    def inputs(self) -> int:
        return self.window * len(self.channels)

    def to_json(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels),
            "node_channels": {c: list(NODE_CHANNELS.get(c, (c,))) for c in self.channels},
            "window": self.window,
            "fit_rows": self.fit_rows,
            "std_floor": list(self.std_floor),
            "clip": self.clip,
        }

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> NodeWindowConfig:
        f = manifest["features"]
        return cls(
            channels=tuple(f["channels"]),
            window=int(f["window"]),
            fit_rows=int(f["fit_rows"]),
            std_floor=tuple(float(v) for v in f["std_floor"]),
            clip=float(f["clip"]),
            threshold=float(manifest.get("threshold", 1.0)),
        )


def select(
    frame: npt.ArrayLike, all_channels: tuple[str, ...], cfg: NodeWindowConfig
) -> FloatArray:
    """The node's input channels of a ``(n, len(all_channels))`` frame, in ``cfg`` order."""
    x = np.asarray(frame, dtype=np.float64)
    return x[:, [all_channels.index(c) for c in cfg.channels]].astype(np.float32)


def standardise(x: npt.ArrayLike, cfg: NodeWindowConfig, fit_rows: int | None = None) -> FloatArray:
    """Scale by the first ``fit_rows`` rows' mean and (sample) deviation, as the node does."""
    a = np.asarray(x, dtype=np.float64)
    n = min(fit_rows if fit_rows is not None else cfg.fit_rows, a.shape[0])
    if n < 2:
        raise ValueError("need at least 2 fit rows to standardise")
    mean = a[:n].mean(axis=0)
    sd = np.maximum(a[:n].std(axis=0, ddof=1), np.asarray(cfg.std_floor))
    return np.clip((a - mean) / sd, -cfg.clip, cfg.clip).astype(np.float32)


def windows(z: FloatArray, window: int) -> FloatArray:
    """Row i -> rows ``i-window+1 .. i`` flattened (oldest first); row 0 pads the start."""
    pad = np.concatenate([np.repeat(z[:1], window - 1, axis=0), z])
    idx = np.arange(z.shape[0])[:, None] + np.arange(window)[None, :]
    return np.ascontiguousarray(pad[idx].reshape(z.shape[0], -1))


def reconstruction_error(x: FloatArray, y: FloatArray) -> FloatArray:
    return np.mean((np.asarray(y) - np.asarray(x)) ** 2, axis=1).astype(np.float32)
