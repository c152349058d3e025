"""training.contrast_table: heads split by drawn lesion contrast, figures per group."""
import json

import pytest

from training import contrast_table


def _case(seed, truth, model, contrast):
    return {"seed": seed, "truth": truth, "model": model, "contrast_hu": contrast}


CASES = [_case(1, 10.0, 8.0, 9.0), _case(2, 20.0, 21.0, 12.0), _case(3, 5.0, 5.5, 6.0),
         _case(4, 30.0, 6.0, 3.0), _case(5, 0.0, 2.0, None), _case(6, 0.0, 4.0, 7.0)]


def test_groups_by_cut_and_lesion_free_without_contrast():
    g = contrast_table.groups(CASES, cut=5.0)
    assert [c["seed"] for c in g["H"]] == [1, 2, 3]
    assert [c["seed"] for c in g["L"]] == [4]
    assert [c["seed"] for c in g["Z"]] == [5, 6]
    assert [c["seed"] for c in contrast_table.groups(CASES, cut=10.0)["H"]] == [2]


def test_figures_per_group():
    t = contrast_table.table({"m": CASES}, cut=5.0)["m"]
    assert t["H"]["n"] == 3 and t["H"]["mae_ml"] == pytest.approx((2.0 + 1.0 + 0.5) / 3)
    assert t["H"]["bias_ml"] == pytest.approx((-2.0 + 1.0 + 0.5) / 3)
    assert t["H"]["pearson_r"] > 0.9
    assert t["L"] == {"n": 1, "mae_ml": 24.0, "bias_ml": -24.0, "pearson_r": None}
    assert t["Z"] == {"n": 2, "median_ml": 3.0}


def test_refuses_a_lesion_head_without_contrast():
    with pytest.raises(SystemExit, match="seed 7"):
        contrast_table.groups([_case(7, 3.0, 3.0, None)], cut=5.0)


def test_main_prints_one_row_per_run(tmp_path, capsys):
    p = tmp_path / "run.json"
    p.write_text(json.dumps({"model_label": "wml-ncct-x", "cases": CASES}))
    assert contrast_table.main([str(p), "--cut", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[2].startswith("| wml-ncct-x (run.json) | 3: 1.17 / -0.17 /")
    assert out[2].endswith("| 1: 24.00 / -24.00 / n/a | 2: 3.00 |")
