"""The training, tuning and evaluation scripts run end to end on a small SKAB-layout set the
test writes (the real SKAB files are not in the repository)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.unit.tinymodels.skab_synth import write_skab_like
from tinymodels import train_gateway, tune_gateway
from tinymodels.runtime import load_model
from tinymodels.skab_data import CHANNELS, labelled_files, load_skab_csv


@pytest.fixture(scope="module")
def skab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("skab")
    write_skab_like(root, seed=5)
    return root


@pytest.fixture(scope="module")
def gateway_artifact(skab_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("gw")
    train_gateway.main(["--data", str(skab_dir), "--out", str(out), "--no-pins", "--epochs", "2"])
    return out / "gateway_model.tflite"


def test_skab_files_are_read_with_their_labels_and_a_foreign_csv_is_refused(
    skab_dir: Path, tmp_path: Path
) -> None:
    names = [p.relative_to(skab_dir).as_posix() for p in labelled_files(skab_dir)]
    assert names == ["other/1.csv", "valve1/0.csv", "valve2/0.csv"]
    f = load_skab_csv(skab_dir / "valve1" / "0.csv", "valve1/0.csv")
    assert f.values.shape == (700, len(CHANNELS))
    assert f.anomaly is not None
    assert f.changepoint is not None
    assert int(f.anomaly.sum()) == 120
    assert int(f.changepoint.sum()) == 1
    assert np.all(np.diff(f.t_s) == 1)
    free = load_skab_csv(skab_dir / "anomaly-free" / "anomaly-free.csv")
    assert free.anomaly is None
    bad = tmp_path / "x.csv"
    bad.write_text("datetime;Current\n2020-01-01 00:00:00;1.0\n")
    with pytest.raises(ValueError, match="missing columns"):
        load_skab_csv(bad)


def test_train_gateway_writes_a_loadable_int8_artifact_whose_manifest_matches(
    gateway_artifact: Path,
) -> None:
    manifest = json.loads(gateway_artifact.with_suffix(".json").read_text())
    model = load_model(gateway_artifact)  # checks the sha256 against the manifest
    assert manifest["quantization"] == "int8"
    assert model.input_features == manifest["input"]["shape"][1] == 8 * 6
    assert manifest["features"]["components"] == ["ae", "t2", "mset"]


def test_the_trained_gateway_detector_finds_the_generated_anomalies(
    gateway_artifact: Path, skab_dir: Path
) -> None:
    model = load_model(gateway_artifact)
    for path in labelled_files(skab_dir):
        f = load_skab_csv(path)
        assert f.anomaly is not None
        pred = model.score_frame(f.values, 400).predictions
        hit = pred[400:][f.anomaly[400:]]
        false = pred[400:][~f.anomaly[400:]]
        assert hit.mean() > 0.6, path
        assert false.mean() < 0.3, path


def test_tune_gateway_prints_the_cv_and_the_all_files_choice(
    gateway_artifact: Path, skab_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tune_gateway.main(["--data", str(skab_dir), "--model", str(gateway_artifact)])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].endswith("settings x 3 files")
    assert sum(line.startswith("hold out ") for line in out) == 3
    assert any(line.startswith("CV (held-out groups pooled) skab f1=") for line in out)
    assert out[-2].startswith("all files: chose channels=")
    assert out[-1].startswith("RESULT skab f1=")


def test_train_gateway_refuses_data_that_differs_from_its_pins(tmp_path: Path) -> None:
    write_skab_like(tmp_path, seed=9)
    with pytest.raises(SystemExit, match=r"pinned data file missing|sha256 differs"):
        train_gateway.load_pinned(tmp_path)


def test_the_attribution_report_names_the_channels_the_generated_anomaly_moved(
    skab_dir: Path,
) -> None:
    from tinymodels.attribution_report import group, report

    assert [group(n) for n in ("valve1/3.csv", "other/2.csv", "other/7.csv", "other/14.csv")] == [
        "valve1",
        "leaks",
        "imbalance",
        "temperature",
    ]
    lines = report(skab_dir)
    assert lines[0].startswith("| experiments |")
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[2:]}
    assert set(rows) == {"valve1/*", "valve2/*", "other/1-3"}
    for line in rows.values():
        named = line.rsplit(" | ", 1)[1]
        # The generated step moves flow (8 sd), pressure (6 sd) and current (4 sd) only.
        top = named.split(",")[0].split()[0]
        assert top in {"flow", "pressure", "current"}, line


def test_train_node_builds_the_vibration_node_model_within_its_budget(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from tinymodels import train_node

    train_node.main(["--out", str(tmp_path), "--frames", "300", "--epochs", "2"])
    manifest = json.loads((tmp_path / "node_model.json").read_text())
    blob = (tmp_path / "node_model.tflite").read_bytes()
    assert len(blob) == manifest["size_bytes"] <= 32 * 1024
    assert 0 < manifest["arena_bytes_measured"] <= 16 * 1024
    assert set(manifest["evaluation"]["detection_rate"]) == {
        "imbalance",
        "bearing",
        "cavitation",
        "blockage",
    }
