import json

import pytest

from training.judge_table import markdown, row


def test_row_bins_and_score(tmp_path):
    cases = [{"seed": 1, "truth": 0.0, "model": 2.0}, {"seed": 2, "truth": 0.5, "model": 0.5},
             {"seed": 3, "truth": 5.0, "model": 4.0}, {"seed": 4, "truth": 20.0, "model": 14.0},
             {"seed": 5, "truth": 3.0, "model": float("nan")}]
    p = tmp_path / "e.json"
    p.write_text(json.dumps({"model_label": "m", "cases": cases}))
    f = row(p)
    assert f["n"] == 4 and f["mae_ml"] == pytest.approx(9 / 4) and f["mae_lt1_ml"] == pytest.approx(1.0)
    assert f["score"] == pytest.approx(9 / 4 + 2.0) and f["lesion_free_median_ml"] == 2.0
    assert f["bias_ge10_ml"] == -6.0 and f["mae_1to10_ml"] == 1.0
    assert markdown("m", f).startswith("| m | 2.250 / 1.000 / 4.25 |")


def test_split_without_lesion_free_heads_prints_na(tmp_path):
    cases = [{"seed": 1, "truth": 0.5, "model": 0.7}, {"seed": 2, "truth": 5.0, "model": 4.0},
             {"seed": 3, "truth": 20.0, "model": 14.0}]
    p = tmp_path / "heldout.json"
    p.write_text(json.dumps({"model_label": "m", "cases": cases}))
    line = markdown("m", row(p))
    assert "| n/a |" in line and line.endswith("| 1.00 |")


def test_split_without_small_or_large_cases_prints_na(tmp_path):
    cases = [{"seed": 1, "truth": 5.0, "model": 4.0}, {"seed": 2, "truth": 3.0, "model": 3.5}]
    p = tmp_path / "mid.json"
    p.write_text(json.dumps({"model_label": "m", "cases": cases}))
    f = row(p)
    assert f["score"] is None and f["mae_ge10_ml"] is None and f["mae_1to10_ml"] == pytest.approx(0.75)
    assert markdown("m", f) == "| m | 0.750 / n/a / n/a | 1.000 | n/a | n/a / n/a | 0.75 |"
