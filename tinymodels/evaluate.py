"""Run the SKAB protocol with the shipped gateway model (LiteRT only, no TensorFlow).

    python -m tinymodels.evaluate --data ../shared/data/skab

Prints a per-file table, then a last line ``RESULT skab f1=... far=... mar=...
nab_standard=... nab_lowfp=... nab_lowfn=...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tinymodels.runtime import DEFAULT_GATEWAY_MODEL, load_model
from tinymodels.skab_data import labelled_files, load_skab_csv
from tinymodels.skab_score import FIT_ROWS, FileScore, Totals, score_file, summarise


def evaluate(data_dir: Path, model_path: Path = DEFAULT_GATEWAY_MODEL) -> list[FileScore]:
    model = load_model(model_path)
    scores = []
    for path in labelled_files(data_dir):
        f = load_skab_csv(path, path.relative_to(data_dir).as_posix())
        assert f.anomaly is not None
        assert f.changepoint is not None
        pred = model.score_frame(f.values, FIT_ROWS).predictions
        scores.append(
            score_file(
                f.name,
                f.t_s[FIT_ROWS:],
                f.anomaly[FIT_ROWS:],
                f.changepoint[FIT_ROWS:],
                pred[FIT_ROWS:],
            )
        )
    return scores


def render(scores: list[FileScore], totals: Totals) -> Table:
    table = Table(title="SKAB (fit on rows 0..399, predict the rest)")
    for col in ("file", "F1", "FAR %", "MAR %", "NAB std", "NAB lowFP", "NAB lowFN"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for s in [*scores, None]:
        c = s.counts if s else totals.counts
        nab = s.nab if s else totals.nab
        table.add_row(
            s.name if s else "[bold]total",
            f"{c.f1:.3f}",
            f"{100 * c.far:.1f}",
            f"{100 * c.mar:.1f}",
            *(f"{nab[p].normalised:.1f}" for p in ("standard", "lowfp", "lowfn")),
        )
    return table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/skab"))
    ap.add_argument("--model", type=Path, default=DEFAULT_GATEWAY_MODEL)
    args = ap.parse_args(argv)
    if not labelled_files(args.data):
        raise SystemExit(f"{args.data}: no labelled SKAB CSV files found; pass --data DIR")
    scores = evaluate(args.data, args.model)
    totals = summarise(scores)
    Console(width=110).print(render(scores, totals))
    print(totals.result_line())


if __name__ == "__main__":
    main()
