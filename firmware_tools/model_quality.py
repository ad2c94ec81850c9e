"""What a model's build manifest says about its quality, for ``flash-model info-model``.

A model built in ``tinymodels`` has a plain JSON manifest beside it (``<model>.json``). For a
node model it records the flash size, the arena measured in TFLite Micro when it was built
and, where it was evaluated on real data, the int8 and float scores and the F1 gap between
them. ``info-model`` shows these beside its own measurement, so a model whose quantisation
cost accuracy is visible before it is flashed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def build_quality(model: Path) -> dict[str, Any] | None:
    """Size, measured arena and the int8-vs-float evaluation from ``<model>.json``, if any."""
    path = model.with_suffix(".json")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or "evaluation" not in manifest:
        return None
    ev = manifest["evaluation"]
    out: dict[str, Any] = {
        "manifest": str(path),
        "size_bytes": manifest.get("size_bytes"),
        "arena_bytes_measured": manifest.get("arena_bytes_measured"),
        "evaluation": ev,
    }
    return out


def quality_line(model: Path) -> str | None:
    """One line for the terminal, or None without an evaluated build manifest."""
    q = build_quality(model)
    if q is None:
        return None
    ev = q["evaluation"]
    if not isinstance(ev, dict) or "int8" not in ev or "float" not in ev:
        return f"build manifest {q['manifest']}: evaluation {ev}"
    return (
        f"build ({q['manifest']}): {q['size_bytes']} B flash, {q['arena_bytes_measured']} B arena "
        f"measured in TFLM; {ev.get('data', 'evaluation')}: int8 F1 {ev['int8']['f1']:.4f}, "
        f"float F1 {ev['float']['f1']:.4f}, int8-vs-float F1 gap {ev['f1_gap']:+.4f}"
    )
