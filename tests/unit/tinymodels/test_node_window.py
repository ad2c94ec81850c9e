"""The node model over windows of node readings: rebuilt byte for byte from data, within the
MCU budget measured in TFLite Micro, scored by the SKAB protocol, fused with the gateway."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.unit.tinymodels.skab_synth import write_skab_like
from tinymodels import evaluate, fusion_cv, train_node_window
from tinymodels.fusion_rule import FusionRule, load_changepoint_rule, load_rule
from tinymodels.node_eval import DEFAULT_NODE_MODEL, NodeModel, node_inputs
from tinymodels.runtime import load_model
from tinymodels.skab_data import labelled_files, load_skab_csv
from tinymodels.tflm import measure_arena, run_int8

pytest.importorskip("tflite_micro")


@pytest.fixture(scope="module")
def skab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("skab")
    write_skab_like(root)
    return root


@pytest.fixture(scope="module")
def built(skab_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("art1")
    train_node_window.main(["--data", str(skab_dir), "--out", str(out), "--no-pins"])
    return out


def test_a_rebuild_from_the_same_data_is_the_same_artifact_byte_for_byte(
    built: Path, skab_dir: Path, tmp_path: Path
) -> None:
    train_node_window.main(["--data", str(skab_dir), "--out", str(tmp_path), "--no-pins"])
    for name in ("node_window_model.tflite", "node_window_model.json"):
        assert (tmp_path / name).read_bytes() == (built / name).read_bytes()


def test_the_built_model_fits_the_node_budget_and_reports_its_skab_scores(built: Path) -> None:
    blob = (built / "node_window_model.tflite").read_bytes()
    manifest = json.loads((built / "node_window_model.json").read_text())
    assert len(blob) == manifest["size_bytes"] <= 32 * 1024
    assert manifest["arena_bytes_measured"] == measure_arena(blob).total_bytes <= 16 * 1024
    ev = manifest["evaluation"]
    # The step anomalies of the generated set are plain: both versions find most of them,
    # and quantisation costs at most 1 point of F1.
    assert ev["int8"]["f1"] > 0.6
    assert abs(ev["f1_gap"]) <= 0.01


def test_the_shipped_node_model_meets_its_budget_and_tflm_matches_litert(skab_dir: Path) -> None:
    blob = DEFAULT_NODE_MODEL.read_bytes()
    manifest = json.loads(DEFAULT_NODE_MODEL.with_suffix(".json").read_text())
    assert len(blob) <= 32 * 1024
    assert manifest["arena_bytes_measured"] == measure_arena(blob).total_bytes <= 16 * 1024
    assert manifest["evaluation"]["f1_gap"] <= 0.01
    node = NodeModel()
    f = load_skab_csv(labelled_files(skab_dir)[0])
    x = node_inputs(f, node.cfg)[::7]
    q = manifest["input"]
    x_q = np.clip(np.round(x / q["scale"]) + q["zero_point"], -128, 127).astype(np.int8)
    micro = run_int8(blob, x_q, manifest["arena_bytes"]).astype(np.int16)
    lite = load_model(DEFAULT_NODE_MODEL, delegates=False).invoke_raw(x_q).astype(np.int16)
    assert np.max(np.abs(micro - lite)) <= 1


def test_the_fusion_rule_is_in_threshold_units_and_falls_back_to_the_gateway() -> None:
    rule = FusionRule(weight=0.5, factor=2.0, hold_on=1, hold_off=1)
    assert rule.fuse([2.0, 4.0], [2.0, 0.0]).tolist() == [1.0, 1.0]
    assert rule.fuse([3.0], None).tolist() == [1.5]
    assert rule.fuse([3.0], [float("nan")]).tolist() == [1.5]
    assert rule.predict([1.0, 3.0, 3.0], [1.0, 3.0, 0.0]).tolist() == [False, True, False]
    with pytest.raises(ValueError):
        FusionRule(weight=1.5)
    assert isinstance(load_rule(), FusionRule)
    assert isinstance(load_changepoint_rule(), FusionRule)


def test_evaluate_prints_node_gateway_and_fused_rows_and_ends_with_the_result_line(
    skab_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluate.main(["--data", str(skab_dir)])
    out = capsys.readouterr().out.strip().splitlines()
    text = "\n".join(out)
    for row in ("node (node_window_model)", "gateway (gateway_model)", "fused (shipped rule)"):
        assert row in text
    assert "fused, leave-one-group-out CV" in text
    assert out[-1].startswith("RESULT skab f1=")
    assert "nab_standard=" in out[-1]


def test_the_fusion_cv_chooses_on_two_groups_and_scores_the_third(skab_dir: Path) -> None:
    files, g, n = evaluate.all_scores(skab_dir)
    scored = fusion_cv.score_grid(files, g, n)
    cv = fusion_cv.cross_validate(scored)
    assert set(cv.chosen) == {"valve1", "valve2", "other"}
    # The pooled held-out counts are exactly the held-out files' counts under their rules.
    tp = sum(
        s.counts.tp
        for grp, rule in cv.chosen.items()
        for s in scored.per[rule]
        if s.name.startswith(grp + "/")
    )
    assert cv.held_out.counts.tp == tp
    assert cv.held_out.f1 > 0.5
    # Changepoints come from their own output: the held-out NAB sums are the changepoint
    # rules', the counts the pointwise rules'.
    assert set(cv.chosen_cp) == set(cv.chosen)
    nab = sum(
        s.nab["standard"].score
        for grp, rule in cv.chosen_cp.items()
        for s in scored.per[rule]
        if s.name.startswith(grp + "/")
    )
    assert cv.held_out.nab["standard"].score == pytest.approx(nab)
    both = scored.combined(cv.final, cv.final_cp)
    assert [s.counts for s in both] == [s.counts for s in scored.per[cv.final]]
    assert [s.nab for s in both] == [s.nab for s in scored.per[cv.final_cp]]


def test_the_gateway_puts_the_node_window_model_score_in_its_threshold_units() -> None:
    from gateway.pipeline.config import DEFAULT_NODE_THRESHOLDS

    manifest = json.loads(DEFAULT_NODE_MODEL.with_suffix(".json").read_text())
    assert DEFAULT_NODE_THRESHOLDS[manifest["name"]] == manifest["threshold"]


def test_a_machine_that_settles_off_normal_after_an_alarm_stays_visible_but_not_alarmed() -> None:
    from tinymodels.fusion_rule import ALARM, NORMAL, SETTLED

    rule = FusionRule(weight=1.0, hold_on=2, hold_off=3, release=0.5, rearm=3.0, min_alarm_rows=5)
    # normal, an anomaly peaking at 8, the process settling at 2.5 (above 1, below 0.5 x 8),
    # a second rise to 9 (> 3 x 2.5), then back to normal.
    score = [0.2] * 3 + [4.0, 8.0, 8.0, 6.0, 5.0, 4.0] + [2.5] * 6 + [9.0] * 3 + [0.3] * 5
    states = rule.states(score, None).tolist()
    assert states[:4] == [NORMAL] * 4
    assert states[4:11] == [ALARM] * 7  # raised after 2 rows; 4.0 is not below 0.5 x 8
    assert states[12:15] == [SETTLED] * 3  # 3 rows below half the peak: settled, still shown
    assert states[15:18] == [ALARM] * 3  # a new rise past rearm x the settled level alarms
    assert states[-1] == NORMAL
    alarms = rule.predict(score, None).tolist()
    assert alarms == [s == ALARM for s in states]
    # Without settling the same scores keep one long alarm.
    plain = FusionRule(weight=1.0, hold_on=2, hold_off=3)
    assert all(plain.predict(score, None)[4:18])
