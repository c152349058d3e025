"""training.cascade: the presence net's reading under the cut, the quantifier's above it, from two evaluate runs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training import cascade, compare, judge_table  # noqa: E402

TRUTH = [0.0, 0.0, 0.4, 0.8, 2.0, 5.0, 12.0, 30.0]
LOW = [0.1, 0.0, 0.3, 0.2, 0.4, 3.0, 6.0, 14.0]   # the presence net: right at the low end, under-reads the loads
HIGH = [2.5, 3.0, 2.0, 2.2, 3.0, 6.0, 10.0, 26.0]  # the quantifier: over-reads the low end, closer on the loads


def _run(label, preds, measurable=None, truth=TRUTH):
    cases = [{"seed": 900000 + i, "truth": t, "model": p, "dice_model": 0.1 * i, "interval": [p - 1, p + 1],
              "passes": [p, p], "seconds": 1.0, "measurable": None if measurable is None else measurable[i],
              "reasons": [] if measurable is None or measurable[i] else ["noise"]}
             for i, (t, p) in enumerate(zip(truth, preds))]
    return {"model_label": label, "sha256": label * 2, "split": "dev", "data": "/d", "cases": cases}


def test_each_case_comes_from_the_net_its_presence_reading_picks():
    res = cascade.combine(_run("P", LOW), _run("Q", HIGH), 1.0)
    picked = [c["model"] for c in res["cases"]]
    assert picked == [0.1, 0.0, 0.3, 0.2, 0.4, 6.0, 10.0, 26.0]  # P under 1 mL (incl. 2.0's 0.4), Q otherwise
    assert [c["source"] for c in res["cases"]] == ["low"] * 5 + ["high"] * 3
    assert res["cases"][5]["dice_model"] == pytest.approx(0.5) and res["cases"][5]["interval"] == [5.0, 7.0]
    assert res["cases"][0]["seconds"] == 2.0  # both nets ran
    assert res["model"]["mae_ml"] == pytest.approx(sum(abs(p - t) for p, t in zip(picked, TRUTH)) / len(TRUTH))
    assert res["cut_ml"] == 1.0 and res["members"]["low"][0] == "P" and res["data"] == "/d"


def test_a_head_either_gate_withholds_is_withheld():
    gate_p = [True] * 8
    gate_q = [True, False] + [True] * 6
    res = cascade.combine(_run("P", LOW, gate_p), _run("Q", HIGH, gate_q), 1.0)
    assert [c["measurable"] for c in res["cases"]][:3] == [True, False, True]
    assert res["cases"][1]["reasons"] == ["noise"]
    assert cascade.combine(_run("P", LOW), _run("Q", HIGH), 1.0)["cases"][0]["measurable"] is None  # no gate ran


def test_the_cut_with_the_lowest_target_score_is_chosen_and_ties_go_to_the_smaller():
    best, table = cascade.choose_cut(_run("P", LOW), _run("Q", HIGH))
    scores = dict(table)
    assert scores[best] == min(scores.values())
    assert best == min(c for c, s in table if s == scores[best])
    # every cut from 0.5 up to 3 mL puts the same cases on each side here: equal scores, the smallest wins
    assert scores[0.5] == scores[1.0] == scores[2.0]
    assert best == 0.5
    assert cascade.score(_run("Q", HIGH)) > scores[best]  # the switch beats the quantifier alone on these cases


def test_runs_over_other_cases_or_another_truth_are_refused():
    with pytest.raises(SystemExit, match="truth"):
        cascade.combine(_run("P", LOW, truth=[t + 0.5 for t in TRUTH]), _run("Q", HIGH), 1.0)
    other = _run("Q", HIGH)
    other["cases"] = other["cases"][:-1]
    with pytest.raises(SystemExit, match="different cases"):
        cascade.combine(_run("P", LOW), other, 1.0)


def test_the_written_run_is_read_by_judge_table_and_compare(tmp_path, capsys):
    (tmp_path / "p.json").write_text(json.dumps(_run("P", LOW)))
    (tmp_path / "q.json").write_text(json.dumps(_run("Q", HIGH)))
    out = tmp_path / "c.json"
    assert cascade.main(["--low", str(tmp_path / "p.json"), "--high", str(tmp_path / "q.json"), "--cut", "1",
                         "--out", str(out)]) == 0
    assert "5 of 8 cases from the presence net" in capsys.readouterr().out
    row = judge_table.row(out)
    assert row["lesion_free_median_ml"] == pytest.approx(0.05)
    label, readings = compare.load(out)
    assert label.startswith("cascade P below 1 mL else Q") and len(readings) == 8
    with pytest.raises(SystemExit):
        cascade.main(["--low", str(tmp_path / "p.json"), "--high", str(tmp_path / "q.json"), "--cut", "1"])
