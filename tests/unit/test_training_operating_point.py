"""training.operating_point writes a validation sweep's choice, by its stated rule, into the manifest."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training import operating_point  # noqa: E402


def _row(floor, support, dil, mae, mae_lt1, r=0.97):
    return {"fraction_floor": floor, "support_threshold": support, "support_dilate_vox": dil, "mae_ml": mae,
            "mae_lt1_ml": mae_lt1, "pearson_r": r, "bias_ml": 0.0, "target_score": mae / 1.0 + mae_lt1 / 0.5}


def _wml_sweep(split="val,val_atlas", sha="a" * 64):
    return {"model_label": "wml-ncct 9.9.9", "sha256": sha, "split": split, "n": 3,
            "cases": [{"seed": 5000}, {"seed": 5001}, {"seed": 6000}],
            "environment": {"SVDMARK_TRAIN_WML_SPREAD": "0.5"},
            "sweep": [_row(0.0, 0.7, 3, 1.9, 1.6), _row(0.2, 0.5, 2, 2.1, 0.6), _row(0.3, 0.0, 0, 2.5, 0.5)],
            "sweep_dice": {"0.3": 0.50, "0.4": 0.56, "0.5": 0.53}}


def _manifest(tmp_path, task="wml", sha="a" * 64):
    p = tmp_path / "manifest.json"
    p.write_text(json.dumps({"task": task, "sha256": sha, "output": {"mask_threshold": 0.5, "threshold": 0.9}}))
    return p


def _run(tmp_path, res, *extra, task="wml"):
    ev = tmp_path / "sweep.json"
    ev.write_text(json.dumps(res))
    man = _manifest(tmp_path, task)
    operating_point.main(["--eval", str(ev), "--manifest", str(man), *extra])
    return json.loads(man.read_text())["output"]


def test_wml_lowest_mae_by_default_and_by_targets_on_request(tmp_path):
    out = _run(tmp_path, _wml_sweep())
    assert (out["fraction_floor"], out["support_threshold"], out["support_dilate_vox"]) == (0.0, 0.7, 3)
    assert out["mask_threshold"] == 0.4  # best Dice, not the default 0.5
    assert "lowest volume MAE" in out["postprocessing_choice"]
    assert "seeds 5000-5001, 6000, n=3" in out["postprocessing_choice"]
    assert "SVDMARK_TRAIN_WML_SPREAD=0.5" in out["postprocessing_choice"]
    out = _run(tmp_path, _wml_sweep(), "--by", "targets")
    assert (out["fraction_floor"], out["support_threshold"], out["support_dilate_vox"]) == (0.2, 0.5, 2)
    assert "MAE(truth < 1 mL) 0.600" in out["postprocessing_choice"]


def test_a_sweep_without_a_case_under_1_ml_chooses_by_mae_and_refuses_targets(tmp_path):
    """No case under 1 mL: no target score (NaN, as training.evaluate writes it); the MAE rule still chooses."""
    res = _wml_sweep()
    res["sweep"] = [_row(0.0, 0.7, 3, 1.9, float("nan")), _row(0.2, 0.5, 2, 1.7, float("nan"))]
    out = _run(tmp_path, res)
    assert (out["fraction_floor"], out["support_threshold"]) == (0.2, 0.5)
    assert "MAE(truth < 1 mL)" not in out["postprocessing_choice"]
    with pytest.raises(SystemExit, match="no target score"):
        _run(tmp_path, res, "--by", "targets")


def test_cmb_best_sensitivity_and_grade_within_the_false_positive_limit(tmp_path):
    res = {"model_label": "cmb-swi 9.9.9", "sha256": "a" * 64, "split": "val", "n": 2,
           "cases": [{"seed": 5000}, {"seed": 5001}],
           "sweep": [{"threshold": 0.5, "sensitivity": 0.95, "fp_per_scan": 3.0, "grade_agreement": 0.9},
                     {"threshold": 0.9, "sensitivity": 0.88, "fp_per_scan": 0.9, "grade_agreement": 0.9},
                     {"threshold": 0.98, "sensitivity": 0.80, "fp_per_scan": 0.2, "grade_agreement": 0.9}]}
    out = _run(tmp_path, res, task="cmb")
    assert out["threshold"] == 0.9 and "FP/scan <= 1.0" in out["threshold_choice"]
    with pytest.raises(SystemExit, match="no swept threshold keeps FP/scan <= 0.1"):
        _run(tmp_path, res, "--max-fp", "0.1", task="cmb")


@pytest.mark.parametrize("split", ["heldout", "val,shifted"])
def test_a_sweep_over_a_reported_split_is_refused(tmp_path, split):
    with pytest.raises(SystemExit, match="an operating point is a choice: use validation splits"):
        _run(tmp_path, _wml_sweep(split))


def test_a_sweep_of_another_model_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="not the model of"):
        _run(tmp_path, _wml_sweep(sha="b" * 64))
    assert "fraction_floor" not in json.loads((tmp_path / "manifest.json").read_text())["output"]



def test_a_development_set_sweep_is_accepted_and_named_by_its_folder(tmp_path):
    res = {**_wml_sweep(split="dev"), "data": "/work/dev_data/choose",
           "cases": [{"seed": 7330000 + i} for i in range(3)]}
    out = _run(tmp_path, res, "--by", "targets")
    assert out["fraction_floor"] == 0.2  # the lowest target score
    assert "dev (seeds 7330000-7330002, n=3;" in out["postprocessing_choice"]
    assert "--data /work/dev_data/choose" in out["postprocessing_choice"]
    assert "SVDMARK_TRAIN" not in out["postprocessing_choice"]  # the generator's variables do not change those cases
