"""Choose the gateway detector's settings and cross-validate that choice on SKAB.

    python -m tinymodels.tune_gateway --data ../shared/data/skab

Uses the shipped autoencoder (LiteRT) and numpy only. A small grid of settings (statistics
combined, channel set, smoothing, threshold factor, hold) is scored on the labelled files
with the SKAB protocol. The selection rule follows the target we set ourselves: among
settings whose NAB standard score on the fitting files is at least :data:`NAB_FLOOR` (the
published Conv-AE level), take the highest F1, counting F1 values within
:data:`F1_TIE` of each other as equal and then preferring the higher NAB standard score.

Honesty check: leave-one-group-out cross-validation over the three experiment groups
(valve1, valve2, other). For each group the rule picks a setting on the other two groups
and that setting is scored on the held-out group; the held-out files' counts are pooled into
one ``CV`` line. The last line is the setting the rule picks on all files.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tinymodels.gateway_features import (
    FeatureConfig,
    causal_windows,
    combine,
    debounce,
    select_model_channels,
    standardise,
    statistic_scores,
    window_errors,
)
from tinymodels.runtime import DEFAULT_GATEWAY_MODEL, GatewayModel, load_model
from tinymodels.skab_data import SkabFile, labelled_files, load_skab_csv
from tinymodels.skab_score import FIT_ROWS, FileScore, Totals, score_file, summarise

NAB_FLOOR = 25.0
F1_TIE = 0.005
GROUPS = ("valve1", "valve2", "other")
COMPONENT_SETS: tuple[tuple[str, ...], ...] = (
    ("ae",),
    ("t2",),
    ("mset",),
    ("ae", "t2"),
    ("ae", "mset"),
    ("t2", "mset"),
    ("ae", "t2", "mset"),
    ("ae", "t2", "q", "mset"),
)
SMOOTH_ROWS = (5, 15)
FACTORS = (1.0, 1.25, 1.5)
HOLDS = ((1, 1), (5, 5), (5, 20), (10, 30))


@dataclass(frozen=True, slots=True)
class Setting:
    channels: str  # "model" (the shipped model_channels) or "all"
    components: tuple[str, ...]
    smooth_rows: int
    factor: float
    hold_on: int
    hold_off: int

    def label(self) -> str:
        return (
            f"channels={self.channels} components={'+'.join(self.components)} "
            f"smooth={self.smooth_rows} factor={self.factor} "
            f"hold={self.hold_on}/{self.hold_off}"
        )


def grid() -> list[Setting]:
    out = []
    for channels, comps, sm, fac, (on, off) in itertools.product(
        ("model", "all"), COMPONENT_SETS, SMOOTH_ROWS, FACTORS, HOLDS
    ):
        # The shipped autoencoder only takes the model channels.
        if channels == "all" and "ae" in comps:
            continue
        out.append(Setting(channels, comps, sm, fac, on, off))
    return out


def raw_statistics(
    model: GatewayModel, f: SkabFile, cfg: FeatureConfig
) -> dict[str, dict[str, npt.NDArray[np.float32]]]:
    """Every statistic for one file, for both channel sets."""
    out = {}
    for channels in ("model", "all"):
        c = cfg if channels == "model" else replace(cfg, model_channels=None)
        c = replace(c, components=("t2", "q", "mset"))
        z = select_model_channels(standardise(f.values, c, FIT_ROWS), c)
        raw = statistic_scores(z, c, FIT_ROWS)
        if channels == "model":
            w = causal_windows(z, cfg.window)
            raw["ae"] = window_errors(w, model.predict_batched(w))
        out[channels] = raw
    return out


def predictions(
    raw: dict[str, dict[str, npt.NDArray[np.float32]]], cfg: FeatureConfig, s: Setting
) -> npt.NDArray[np.bool_]:
    c = replace(cfg, components=s.components, smooth_rows=s.smooth_rows)
    score = combine(raw[s.channels], c, FIT_ROWS)
    return debounce(score > s.factor, s.hold_on, s.hold_off)


def rank(t: Totals) -> tuple[int, float, float]:
    nab = t.nab_score("standard")
    feasible = 1 if nab >= NAB_FLOOR else 0
    return (feasible, round(t.f1 / F1_TIE) if feasible else 0, nab)


def pick(per: dict[Setting, list[FileScore]], names: Sequence[str]) -> Setting:
    keep = set(names)
    return max(per, key=lambda s: rank(summarise(x for x in per[s] if x.name in keep)))


def group_of(name: str) -> str:
    return name.split("/", 1)[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/skab"))
    ap.add_argument("--model", type=Path, default=DEFAULT_GATEWAY_MODEL)
    args = ap.parse_args(argv)
    model = load_model(args.model)
    cfg = model.feature_config
    if cfg is None:
        raise SystemExit(f"{args.model}: manifest has no gateway feature config")
    files = [
        load_skab_csv(p, p.relative_to(args.data).as_posix()) for p in labelled_files(args.data)
    ]
    if not files:
        raise SystemExit(f"{args.data}: no labelled SKAB CSV files found; pass --data DIR")
    raws = [raw_statistics(model, f, cfg) for f in files]
    per: dict[Setting, list[FileScore]] = {}
    for s in grid():
        per[s] = []
        for f, raw in zip(files, raws, strict=True):
            assert f.anomaly is not None
            assert f.changepoint is not None
            p = predictions(raw, cfg, s)
            per[s].append(
                score_file(
                    f.name,
                    f.t_s[FIT_ROWS:],
                    f.anomaly[FIT_ROWS:],
                    f.changepoint[FIT_ROWS:],
                    p[FIT_ROWS:],
                )
            )
    print(f"{len(per)} settings x {len(files)} files")
    held: list[FileScore] = []
    for g in GROUPS:
        fit_names = [f.name for f in files if group_of(f.name) != g]
        chosen = pick(per, fit_names)
        scores = [x for x in per[chosen] if group_of(x.name) == g]
        held.extend(scores)
        fit_t = summarise(x for x in per[chosen] if x.name in set(fit_names))
        print(f"hold out {g}: chose {chosen.label()}")
        print(f"  fitting files  {fit_t.result_line().removeprefix('RESULT skab ')}")
        print(f"  held-out files {summarise(scores).result_line().removeprefix('RESULT skab ')}")
    print("CV (held-out groups pooled) " + summarise(held).result_line().removeprefix("RESULT "))
    chosen = pick(per, [f.name for f in files])
    print(f"all files: chose {chosen.label()}")
    print(summarise(per[chosen]).result_line())


if __name__ == "__main__":
    main()
