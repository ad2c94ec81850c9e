"""The fused anomaly score: one rule over the node's and the gateway's scores (numpy only).

Both inputs are in threshold units (1.0 = that model's own threshold, each fitted on the
machine's own normal rows). The fused score is

    fused = (weight * gateway + (1 - weight) * node) / factor

so 1.0 is again the alarm threshold; a row is anomalous once ``fused > 1`` has held for
``hold_on`` rows, and normal again after ``hold_off`` rows below (:func:`debounce`).
A missing node score (a node without a model, or one whose channels the node model does not
cover) counts as the gateway score itself, so the rule degrades to the gateway alone.

The shipped rule (``tinymodels/artifacts/fusion.json``) is chosen by
:mod:`tinymodels.fusion_cv`; the gateway's pipeline applies the same function per node.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tinymodels.gateway_features import debounce

DEFAULT_FUSION_RULE = Path(__file__).with_name("artifacts") / "fusion.json"


@dataclass(frozen=True, slots=True)
class FusionRule:
    weight: float = 0.5  # the gateway's share; 1.0 = gateway only, 0.0 = node only
    factor: float = 1.0
    hold_on: int = 10
    hold_off: int = 30

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0 or self.factor <= 0:
            raise ValueError("weight must be in [0, 1] and factor > 0")
        if self.hold_on < 1 or self.hold_off < 1:
            raise ValueError("hold_on and hold_off must be >= 1")

    def label(self) -> str:
        return f"weight={self.weight:g} factor={self.factor:g} hold={self.hold_on}/{self.hold_off}"

    def fuse(self, gateway: npt.ArrayLike, node: npt.ArrayLike | None) -> npt.NDArray[np.float32]:
        g = np.asarray(gateway, dtype=np.float64)
        n = g if node is None else np.where(np.isnan(np.asarray(node, np.float64)), g, node)
        return ((self.weight * g + (1.0 - self.weight) * n) / self.factor).astype(np.float32)

    def predict(self, gateway: npt.ArrayLike, node: npt.ArrayLike | None) -> npt.NDArray[np.bool_]:
        return debounce(self.fuse(gateway, node) > 1.0, self.hold_on, self.hold_off)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_rule(path: Path = DEFAULT_FUSION_RULE) -> FusionRule:
    obj = json.loads(path.read_text())
    return FusionRule(**{k: obj["rule"][k] for k in ("weight", "factor", "hold_on", "hold_off")})
