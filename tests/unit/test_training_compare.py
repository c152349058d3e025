"""training.compare: two WML runs paired on the cases both report, B − A with a bootstrap CI."""
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
    assert "A 1.0, as scored" in printed and "B - A mae_ml on 6 common cases: -0.500" in printed
    # B as scored reads the two lesion-free heads A withheld; its as-scored median counts them
    assert compare._as_scored(compare.load(b)[1])["lesion_free_median_ml"] == pytest.approx(0.5)


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
