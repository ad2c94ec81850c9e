"""The training and tuning scripts' remaining paths, on a SKAB-layout set the test writes: the
gateway artifact is rebuilt byte for byte, data pins accept the pinned files and refuse a
changed one, and the fusion rule choice is written where asked and read back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.tinymodels.skab_synth import write_skab_like
from tinymodels import evaluate, fusion_cv, train_gateway
from tinymodels.fusion_rule import load_changepoint_rule, load_rule


@pytest.fixture(scope="module")
def skab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("skab")
    write_skab_like(root, seed=11)
    return root


def _train(data: Path, out: Path, *extra: str) -> None:
    train_gateway.main(
        ["--data", str(data), "--out", str(out), "--no-pins", "--epochs", "2", *extra]
    )


def test_a_gateway_model_rebuilt_from_the_same_data_is_the_same_artifact_byte_for_byte(
    skab_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorflow")
    # Each build in its own process, as a rebuild is run (TensorFlow's op determinism is
    # set before it is imported; a second build inside one process is not bit-identical).
    for out in ("a", "b"):
        subprocess.run(
            [sys.executable, "-m", "tinymodels.train_gateway", "--data", str(skab_dir),
             "--out", str(tmp_path / out), "--no-pins", "--epochs", "2"],
            check=True, capture_output=True,
        )  # fmt: skip
    for name in ("gateway_model.tflite", "gateway_model.json"):
        first = (tmp_path / "a" / name).read_bytes()
        assert first  # a real artifact, not an empty file
        assert (tmp_path / "b" / name).read_bytes() == first, name


def test_an_unknown_channel_to_drop_is_refused(skab_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    with pytest.raises(SystemExit, match="unknown"):
        _train(skab_dir, tmp_path, "--drop-channels", "Temperature,Humidity")
    assert not (tmp_path / "gateway_model.tflite").exists()


def test_pins_written_for_a_folder_accept_it_and_refuse_a_changed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "skab"
    write_skab_like(data, seed=4)
    monkeypatch.setattr(train_gateway, "PINS_PATH", tmp_path / "pins.json")
    train_gateway.main(["--data", str(data), "--write-pins"])
    free, labelled = train_gateway.load_pinned(data)
    assert free.anomaly is None
    assert [f.name for f in labelled] == ["other/1.csv", "valve1/0.csv", "valve2/0.csv"]

    changed = data / "valve2" / "0.csv"
    changed.write_text(changed.read_text().replace(";", ";", 1) + "\n")
    with pytest.raises(SystemExit, match="sha256 differs"):
        train_gateway.load_pinned(data)
    changed.unlink()
    with pytest.raises(SystemExit, match="pinned data file missing"):
        train_gateway.load_pinned(data)


def test_settling_is_never_switched_off_by_the_fusion_grid() -> None:
    rules = fusion_cv.grid()
    assert rules
    assert all(r.release > 0 for r in rules)


def test_fusion_cv_prints_the_folds_and_writes_its_choice_only_where_asked(
    skab_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = fusion_cv.DEFAULT_FUSION_RULE.read_bytes()
    fusion_cv.main(["--data", str(skab_dir)])
    out = capsys.readouterr().out.strip().splitlines()
    assert sum(line.startswith("hold out ") for line in out) == 3
    assert any(line.startswith("CV (held-out groups pooled) skab f1=") for line in out)
    assert out[-1].startswith("all files: chose weight=")
    assert fusion_cv.DEFAULT_FUSION_RULE.read_bytes() == shipped  # no --write: untouched

    files, g, n = evaluate.all_scores(skab_dir)
    cv = fusion_cv.cross_validate(fusion_cv.score_grid(files, g, n))
    path = tmp_path / "fusion.json"
    fusion_cv.write_rule(cv, path)
    assert load_rule(path) == cv.final
    assert load_changepoint_rule(path) == cv.final_cp
    assert f"all files: chose {cv.final.label()}" in out[-1]
