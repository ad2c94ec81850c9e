"""Run the SKAB protocol with the shipped node, gateway and fused detectors (no TensorFlow).

    python -m tinymodels.evaluate --data ../shared/data/skab

Prints a per-file table for the fused detector, one summary row each for the node model
alone, the gateway model alone and the fused rule (``tinymodels/artifacts/fusion.json``),
the leave-one-group-out cross-validation of the fusion rule (chosen on two experiment groups,
scored on the third, pooled), and a last line ``RESULT skab f1=... far=... mar=...
nab_standard=... nab_lowfp=... nab_lowfn=...`` for the shipped (fused) detector.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from tinymodels.fusion_rule import (
    DEFAULT_FUSION_RULE,
    FusionRule,
    load_changepoint_rule,
    load_rule,
)
from tinymodels.node_eval import DEFAULT_NODE_MODEL, NodeModel, node_predictions, score_rows
from tinymodels.runtime import DEFAULT_GATEWAY_MODEL, load_model
from tinymodels.skab_data import SkabFile, labelled_files, load_skab_csv
from tinymodels.skab_score import FIT_ROWS, FileScore, Totals, summarise

Scores = dict[str, npt.NDArray[np.float32]]


def all_scores(
    data_dir: Path,
    model_path: Path = DEFAULT_GATEWAY_MODEL,
    node_model_path: Path = DEFAULT_NODE_MODEL,
) -> tuple[list[SkabFile], Scores, Scores]:
    """The labelled files and, per file name, the gateway's and the node's row scores."""
    gateway = load_model(model_path)
    node = NodeModel(node_model_path)
    files = [load_skab_csv(p, p.relative_to(data_dir).as_posix()) for p in labelled_files(data_dir)]
    g = {f.name: gateway.score_frame(f.values, FIT_ROWS).scores for f in files}
    n = {f.name: node.scores(f) for f in files}
    return files, g, n


def evaluate(
    data_dir: Path,
    model_path: Path = DEFAULT_GATEWAY_MODEL,
    node_model_path: Path = DEFAULT_NODE_MODEL,
    rule: FusionRule | None = None,
    changepoint_rule: FusionRule | None = None,
) -> dict[str, list[FileScore]]:
    """Per-file scores of the ``node``, ``gateway`` and ``fused`` detectors (the fused one:
    pointwise counts from ``rule``, NAB from ``changepoint_rule``'s changepoints)."""
    rule = rule or load_rule()
    cp_rule = changepoint_rule or rule
    gateway = load_model(model_path)
    files, g, n = all_scores(data_dir, model_path, node_model_path)
    out: dict[str, list[FileScore]] = {"node": [], "gateway": [], "fused": []}
    for f in files:
        out["node"].append(score_rows(f, node_predictions(n[f.name])))
        out["gateway"].append(score_rows(f, gateway.score_frame(f.values, FIT_ROWS).predictions))
        point = score_rows(f, rule.predict(g[f.name], n[f.name]))
        cps = score_rows(f, cp_rule.predict(g[f.name], n[f.name]))
        out["fused"].append(FileScore(point.name, point.counts, cps.nab))
    return out


def _row(table: Table, name: str, c_f1: float, t: Totals | FileScore) -> None:
    counts = t.counts
    nab = t.nab
    table.add_row(
        name,
        f"{c_f1:.3f}",
        f"{100 * counts.far:.1f}",
        f"{100 * counts.mar:.1f}",
        *(f"{nab[p].normalised:.1f}" for p in ("standard", "lowfp", "lowfn")),
    )


def render(title: str, rows: list[tuple[str, Totals | FileScore]]) -> Table:
    table = Table(title=title)
    for col in ("detector / file", "F1", "FAR %", "MAR %", "NAB std", "NAB lowFP", "NAB lowFN"):
        table.add_column(col, justify="left" if col.startswith("detector") else "right")
    for name, t in rows:
        _row(table, name, t.counts.f1, t)
    return table


def main(argv: list[str] | None = None) -> None:
    from tinymodels.fusion_cv import cross_validate, score_grid

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/skab"))
    ap.add_argument("--model", type=Path, default=DEFAULT_GATEWAY_MODEL)
    ap.add_argument("--node-model", type=Path, default=DEFAULT_NODE_MODEL)
    ap.add_argument("--rule", type=Path, default=DEFAULT_FUSION_RULE, help="fusion rule JSON")
    ap.add_argument("--no-cv", action="store_true", help="skip the fusion rule's cross-validation")
    args = ap.parse_args(argv)
    if not labelled_files(args.data):
        raise SystemExit(f"{args.data}: no labelled SKAB CSV files found; pass --data DIR")
    rule = load_rule(args.rule)
    cp_rule = load_changepoint_rule(args.rule)
    per = evaluate(args.data, args.model, args.node_model, rule, cp_rule)
    totals = {k: summarise(v) for k, v in per.items()}
    console = Console(width=110)
    title = (
        f"SKAB, fused detector (pointwise {rule.label()}; changepoints {cp_rule.label()}), "
        f"fit on rows 0..{FIT_ROWS - 1}"
    )
    console.print(render(title, [(s.name, s) for s in per["fused"]]))
    rows: list[tuple[str, Totals | FileScore]] = [
        ("node (node_window_model)", totals["node"]),
        ("gateway (gateway_model)", totals["gateway"]),
        ("fused (shipped rule)", totals["fused"]),
    ]
    if not args.no_cv:
        files, g, n = all_scores(args.data, args.model, args.node_model)
        cv = cross_validate(score_grid(files, g, n))
        rows.append(("fused, leave-one-group-out CV", cv.held_out))
        for group, r in cv.chosen.items():
            print(
                f"CV: holding out {group}, chosen on the other groups: pointwise {r.label()}; "
                f"changepoints {cv.chosen_cp[group].label()}"
            )
    console.print(render("SKAB totals (summed over files)", rows))
    for name, t in rows:
        print(
            f"{name}: {t.result_line().removeprefix('RESULT skab ')}"
            if isinstance(t, Totals)
            else name
        )
    print(totals["fused"].result_line())


if __name__ == "__main__":
    main()
