"""The node model's feature extraction: pure numpy, shared bit-for-bit by node sim and gateway.

One *frame* is a short capture from one pump node:

* ``vibration``: :data:`VIB_SAMPLES` accelerometer samples at :data:`VIB_RATE_HZ` (m/s²);
* ``current``, ``pressure``, ``temperature``: a few slow samples taken during the capture.

From it come :data:`N_FEATURES` float features in a fixed order (:data:`FEATURE_NAMES`):
log energies of :data:`N_BANDS` vibration bands, vibration RMS and crest factor, and the mean
and spread of the slow channels. :func:`normalise` then applies the per-feature centre and
scale carried in the node model's manifest, which is what the int8 model consumes.
Firmware ports must follow this file exactly (Hann window, rfft bins, band edges, log1p).
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

VIB_RATE_HZ = 1000.0
VIB_SAMPLES = 256
# Band edges in rfft bins of a 256-point frame (3.9 Hz per bin): 1x/2x running speed,
# blade pass, mid and high bands where bearing and cavitation energy shows.
BAND_EDGES: tuple[int, ...] = (1, 5, 9, 14, 20, 32, 48, 80, 129)
N_BANDS = len(BAND_EDGES) - 1
FEATURE_NAMES: tuple[str, ...] = (
    *(f"vib_band{i}_log" for i in range(N_BANDS)),
    "vib_rms",
    "vib_crest",
    "current_mean",
    "current_std",
    "pressure_mean",
    "pressure_std",
    "temperature_mean",
    "temperature_slope",
)
N_FEATURES = len(FEATURE_NAMES)

FloatArray = npt.NDArray[np.float32]
_HANN = np.hanning(VIB_SAMPLES).astype(np.float64)


def extract_features(
    vibration: npt.ArrayLike,
    current: npt.ArrayLike,
    pressure: npt.ArrayLike,
    temperature: npt.ArrayLike,
) -> FloatArray:
    """Features of one frame, in :data:`FEATURE_NAMES` order (float32)."""
    vib = np.asarray(vibration, dtype=np.float64)
    if vib.shape != (VIB_SAMPLES,):
        raise ValueError(f"vibration must have {VIB_SAMPLES} samples, got {vib.shape}")
    vib = vib - vib.mean()
    spec = np.abs(np.fft.rfft(vib * _HANN)) ** 2 / VIB_SAMPLES
    bands = [np.log1p(spec[lo:hi].sum()) for lo, hi in itertools.pairwise(BAND_EDGES)]
    rms = float(np.sqrt(np.mean(vib**2)))
    crest = float(np.max(np.abs(vib)) / rms) if rms > 0 else 0.0
    cur = np.asarray(current, dtype=np.float64)
    prs = np.asarray(pressure, dtype=np.float64)
    tmp = np.asarray(temperature, dtype=np.float64)
    slope = float(tmp[-1] - tmp[0]) if tmp.size > 1 else 0.0
    feats = [
        *bands,
        rms,
        crest,
        float(cur.mean()),
        float(cur.std()),
        float(prs.mean()),
        float(prs.std()),
        float(tmp.mean()),
        slope,
    ]
    return np.asarray(feats, dtype=np.float32)


def normalise(features: npt.ArrayLike, centre: npt.ArrayLike, scale: npt.ArrayLike) -> FloatArray:
    """``(features - centre) / scale`` for a single frame or a ``(n, N_FEATURES)`` batch."""
    f = np.asarray(features, dtype=np.float32)
    return ((f - np.asarray(centre, np.float32)) / np.asarray(scale, np.float32)).astype(np.float32)


def reconstruction_score(normalised: FloatArray, reconstruction: FloatArray) -> FloatArray:
    """Mean squared reconstruction error per frame: the node's anomaly score."""
    return np.mean((reconstruction - normalised) ** 2, axis=-1).astype(np.float32)
