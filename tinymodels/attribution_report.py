"""Which channels the gateway detector names, per SKAB experiment group, beside what each
experiment physically changed.

    python -m tinymodels.attribution_report --data ../shared/data/skab

For every labelled file the shipped detector's statistics are fitted on rows 0..399 as in
evaluation; over the test rows it flags as anomalous *and* that are labelled anomalous, each
model channel's share (:mod:`tinymodels.attribution`) is averaged. The table gives the two
largest shares per group of experiments, next to SKAB's description of the experiment.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tinymodels.attribution import DISPLAY, row_shares
from tinymodels.gateway_features import MsetFit, PcaFit, select_model_channels, standardise
from tinymodels.runtime import DEFAULT_GATEWAY_MODEL, GatewayModel, load_model
from tinymodels.skab_data import SkabFile, labelled_files, load_skab_csv
from tinymodels.skab_score import FIT_ROWS

# SKAB's own description of the experiments (data README), keyed by group.
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "valve1": ("valve1/*", "valve closed at the pump inlet"),
    "valve2": ("valve2/*", "valve closed at the outlet"),
    "leaks": ("other/1-3", "fluid leaks and additions"),
    "imbalance": ("other/5-8", "rotor imbalance"),
    "water": ("other/10", "slow water increase"),
    "cavitation": ("other/12", "cavitation by draining"),
    "temperature": ("other/14", "increased water temperature"),
}


def group(name: str) -> str:
    folder, _, stem = name.partition("/")
    if folder != "other":
        return folder
    n = int(stem.removesuffix(".csv")) if stem.removesuffix(".csv").isdigit() else -1
    if n <= 3:
        return "leaks"
    if n <= 8:
        return "imbalance"
    return {10: "water", 12: "cavitation", 14: "temperature"}.get(n, "other")


def file_shares(model: GatewayModel, f: SkabFile) -> npt.NDArray[np.float64] | None:
    """Mean share per model channel over the detected anomalous test rows (None: none)."""
    cfg = model.feature_config
    assert cfg is not None
    assert f.anomaly is not None
    zm = select_model_channels(standardise(f.values, cfg, FIT_ROWS), cfg).astype(np.float64)
    pca = PcaFit.fit(zm[:FIT_ROWS], cfg.pca_variance)
    mset = MsetFit.fit(zm[:FIT_ROWS], cfg.mset_memory)
    hit = model.score_frame(f.values, FIT_ROWS).predictions & f.anomaly
    hit[:FIT_ROWS] = False
    if not hit.any():
        return None
    share = row_shares(pca, mset, zm[hit])
    assert share is not None
    return np.asarray(share.mean(axis=0))


def report(data_dir: Path, model_path: Path = DEFAULT_GATEWAY_MODEL) -> list[str]:
    model = load_model(model_path)
    cfg = model.feature_config
    assert cfg is not None
    names = cfg.model_channels or cfg.channels
    per: dict[str, list[npt.NDArray[np.float64]]] = defaultdict(list)
    missed: dict[str, int] = defaultdict(int)
    for p in labelled_files(data_dir):
        f = load_skab_csv(p, p.relative_to(data_dir).as_posix())
        s = file_shares(model, f)
        if s is None:
            missed[group(f.name)] += 1
        else:
            per[group(f.name)].append(s)
    lines = [
        "| experiments | what changed (SKAB) | files scored | channels named (mean share) |",
        "|---|---|---|---|",
    ]
    for key, (files, what) in EXPERIMENTS.items():
        if key not in per and key not in missed:
            continue
        if key in per:
            mean = np.mean(per[key], axis=0)
            order = np.argsort(-mean)[:3]
            named = ", ".join(
                f"{DISPLAY.get(names[i], names[i])} {100 * mean[i]:.0f} %" for i in order
            )
        else:
            named = "(nothing detected)"
        extra = f" (+{missed[key]} with no detection)" if missed.get(key) else ""
        lines.append(f"| {files} | {what} | {len(per.get(key, []))}{extra} | {named} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/skab"))
    ap.add_argument("--model", type=Path, default=DEFAULT_GATEWAY_MODEL)
    args = ap.parse_args(argv)
    if not labelled_files(args.data):
        raise SystemExit(f"{args.data}: no labelled SKAB CSV files found; pass --data DIR")
    print("\n".join(report(args.data, args.model)))


if __name__ == "__main__":
    main()
