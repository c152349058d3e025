"""training.compare: two runs (WML or CMB) paired on the cases both report, B − A with a bootstrap CI."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training import compare  # noqa: E402

TRUTH = [0.0, 0.0, 0.4, 0.8, 2.0, 5.0, 12.0, 30.0]


def _evaluate_json(path, preds, label, withheld=()):
    cases = [{"seed": 900000 + i, "truth": t, "model": p, "measurable": i not in withheld, "passes": [p, p]}
             for i, (t, p) in enumerate(zip(TRUTH, preds))]
    path.write_text(json.dumps({"model_label": label, "split": "heldout", "cases": cases}))
    return path


def _stress_json(path, preds, label, withheld=(), truth=TRUTH):
    cases = [{"seed": 7310000 + i, "truth_ml": t, "pred_ml": None if i in withheld else p, "withheld": i in withheld}
             for i, (t, p) in enumerate(zip(truth, preds))]
    path.write_text(json.dumps({"model": label, "cases": cases}))
    return path


def test_a_case_withheld_by_either_model_leaves_the_common_set(tmp_path, capsys):
    a = _stress_json(tmp_path / "a.json", [t + 1.0 for t in TRUTH], "A 1.0", withheld=(0, 1))
    b = _stress_json(tmp_path / "b.json", [t + 0.5 for t in TRUTH], "B 2.0")
    out = tmp_path / "cmp.json"
    assert compare.main([str(a), str(b), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["common"] == 6  # the two lesion-free heads A withheld are not compared
    assert res["a"]["mae_ml"] == pytest.approx(1.0) and res["b"]["mae_ml"] == pytest.approx(0.5)
    assert res["a"]["lesion_free_median_ml"] is None  # none left in common
    d = res["difference"]["mae_ml"]
    assert d["b_minus_a"] == pytest.approx(-0.5) and d["ci95"] == pytest.approx([-0.5, -0.5])
    printed = capsys.readouterr().out
    assert "A 1.0, as scored" in printed and "B - A mae_ml on 6 common cases: -0.5 " in printed
    # B as scored reads the two lesion-free heads A withheld; its as-scored median counts them
    assert compare.as_scored(compare.load(b)[1])["lesion_free_median_ml"] == pytest.approx(0.5)


def test_the_interval_covers_a_noisy_difference_and_excludes_zero_only_when_it_should(tmp_path):
    rng = [0.3, -0.2, 0.1, 0.4, -0.3, 0.2, -0.1, 0.0]
    a = _evaluate_json(tmp_path / "a.json", [t + 1.0 for t in TRUTH], "A")
    same = _evaluate_json(tmp_path / "s.json", [t + 1.0 + e for t, e in zip(TRUTH, rng)], "S")
    res = compare.paired(compare.load(a)[1], compare.load(same)[1], boot=4000)
    lo, hi = res["difference"]["mae_ml"]["ci95"]
    assert lo < res["difference"]["mae_ml"]["b_minus_a"] < hi and lo < 0 < hi
    better = _evaluate_json(tmp_path / "b.json", [t + 0.2 + abs(e) for t, e in zip(TRUTH, rng)], "B")
    lo, hi = compare.paired(compare.load(a)[1], compare.load(better)[1])["difference"]["mae_ml"]["ci95"]
    assert hi < 0
    assert compare.paired(compare.load(a)[1], compare.load(better)[1])["difference"]["mae_lt1_ml"]["n"] == 4


def test_runs_over_different_data_are_refused(tmp_path):
    a = _stress_json(tmp_path / "a.json", TRUTH, "A")
    b = _stress_json(tmp_path / "b.json", TRUTH, "B", truth=[t + 0.01 for t in TRUTH])
    with pytest.raises(SystemExit, match="did not read the same data"):
        compare.paired(compare.load(a)[1], compare.load(b)[1])
    fewer = _stress_json(tmp_path / "c.json", TRUTH[:5], "C", truth=TRUTH[:5])
    with pytest.raises(SystemExit, match="3 only in A, 0 only in B"):
        compare.paired(compare.load(a)[1], compare.load(fewer)[1])


def test_a_run_without_a_gate_counts_every_case_as_reported(tmp_path):
    """training.evaluate writes measurable = None where the model has no quality gate."""
    a = _evaluate_json(tmp_path / "a.json", TRUTH, "A")
    res = json.loads(a.read_text())
    for c in res["cases"]:
        c["measurable"] = None
    a.write_text(json.dumps(res))
    assert compare.as_scored(compare.load(a)[1])["withheld"] == 0


def _cmb_evaluate_json(path, rows, label):
    """rows: (truth count, tp, fp, model count, truth grade, model grade, measurable)."""
    cases = [{"seed": 900000 + i, "n_truth": n, "tp": tp, "fp": fp, "count": c, "grade_truth": g, "grade_model": gm,
              "measurable": m} for i, (n, tp, fp, c, g, gm, m) in enumerate(rows)]
    path.write_text(json.dumps({"model_label": label, "cases": cases}))
    return path


def test_cmb_sensitivity_is_pooled_over_bleeds_and_the_gate_still_pairs(tmp_path):
    a = _cmb_evaluate_json(tmp_path / "a.json", [(0, 0, 2, 2, 0, 1, True), (8, 4, 1, 5, 1, 1, True),
                                                  (40, 20, 0, 20, 3, 2, True), (12, 6, 0, 6, 2, 1, False)], "A")
    b = _cmb_evaluate_json(tmp_path / "b.json", [(0, 0, 0, 0, 0, 0, True), (8, 8, 0, 8, 1, 1, True),
                                                  (40, 36, 1, 37, 3, 3, True), (12, 12, 0, 12, 2, 2, True)], "B")
    (_, ra), (_, rb) = compare.load(a), compare.load(b)
    res = compare.paired(ra, rb, boot=500)
    assert res["common"] == 3  # A withheld the fourth scan
    assert res["a"]["sensitivity"] == pytest.approx(24 / 48) and res["b"]["sensitivity"] == pytest.approx(44 / 48)
    d = res["difference"]
    assert d["sensitivity"]["b_minus_a"] == pytest.approx(20 / 48)
    assert d["fp_per_scan"]["b_minus_a"] == pytest.approx((-2 - 1 + 1) / 3)
    assert d["grade_agreement"]["b_minus_a"] == pytest.approx(2 / 3)
    lo, hi = d["sensitivity"]["ci95"]
    assert 0 < lo <= 20 / 48 <= hi  # every resample has B finding more
    assert "B - A sensitivity on 3 common cases" in compare.report("A", "B", ra, rb, res)
    # the same scans as stress.score writes them read the same
    stress = json.loads(a.read_text())
    stress["cases"] = [{"seed": c["seed"], "count": c["n_truth"], "pred_count": c["count"], "tp": c["tp"],
                        "fp": c["fp"], "grade": c["grade_truth"], "pred_grade": c["grade_model"],
                        "withheld": not c["measurable"]}
                       for c in stress["cases"]]
    (tmp_path / "a_stress.json").write_text(json.dumps(stress))
    assert compare.load(tmp_path / "a_stress.json")[1] == ra
    # a scan stress.score could not run (an error, or not routed) has no reading: it is not reported
    stress["cases"][1] = {k: v for k, v in stress["cases"][1].items() if k in ("seed", "count", "grade")}
    stress["cases"][1]["error"] = "VolumeError: inconsistent stack"
    (tmp_path / "a_stress.json").write_text(json.dumps(stress))
    assert not compare.load(tmp_path / "a_stress.json")[1][900001].reported


def test_a_wml_run_is_not_compared_with_a_cmb_run(tmp_path):
    a = _evaluate_json(tmp_path / "a.json", TRUTH, "A")
    b = _cmb_evaluate_json(tmp_path / "b.json", [(0, 0, 0, 0, 0, 0, True)], "B")
    with pytest.raises(SystemExit, match="WML and the other CMB"):
        compare.paired(compare.load(a)[1], compare.load(b)[1])
