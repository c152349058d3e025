"""training.volume_map: a monotone map of the reading, fitted on the other development runs, applied to each."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training import volume_map  # noqa: E402
from training.compare import WmlReading  # noqa: E402


def _run(path: Path, start: int, truth, preds, split="dev", label="wml-ncct 9.9.9") -> Path:
    cases = [{"seed": start + i, "truth": float(t), "model": float(p), "measurable": True}
             for i, (t, p) in enumerate(zip(truth, preds))]
    path.write_text(json.dumps({"model_label": label, "split": split, "cases": cases}))
    return path


def test_the_map_is_the_least_squares_non_decreasing_step_function():
    fit = volume_map.MonotoneMap([WmlReading(t, p, True) for t, p in [(0, 1), (4, 2), (2, 3), (10, 5)]])
    assert [fit(v) for v in (0.5, 1, 2, 3, 4.9, 5, 99)] == [0, 0, 3, 3, 3, 10, 10]  # 4 then 2 pooled to 3


def test_a_reading_that_is_a_fixed_share_of_the_truth_is_mapped_back_on_heads_not_fitted(tmp_path):
    rng = np.random.default_rng(0)
    runs = {}
    for k in range(3):
        truth = rng.uniform(0, 40, 60)
        path = _run(tmp_path / f"eval_wml_dev-set{k}.json", 7_000_000 + 100 * k, truth, 0.4 * truth)
        runs[path.stem] = volume_map._read(path)[1]
    for raw, mapped in volume_map.leave_one_out(runs).values():
        assert raw["bias_ge10_ml"] < -10  # read at 0.4 of the truth
        assert mapped["mae_ml"] < raw["mae_ml"] / 5 and abs(mapped["bias_ge10_ml"]) < 2


def test_the_cli_prints_raw_and_mapped_rows_per_run(tmp_path, capsys):
    paths = [_run(tmp_path / f"eval_wml_dev-s{k}.json", 7_000_000 + 10 * k, [0, 1, 5, 20], [1, 1, 2, 8])
             for k in range(2)]
    assert volume_map.main([str(p) for p in paths]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| eval_wml_dev-s")]
    assert [r.split(" | ")[0] for r in rows] == ["| eval_wml_dev-s0 raw", "| eval_wml_dev-s0 mapped",
                                                  "| eval_wml_dev-s1 raw", "| eval_wml_dev-s1 mapped"]


@pytest.mark.parametrize("second, why", [
    (dict(split="stress"), "not a development-set run"),
    (dict(start=7_000_002), "reads heads another run reads"),
    (dict(label="wml-ncct 1.0.0"), "different models"),
])
def test_runs_that_would_fit_on_what_they_judge_or_mix_models_are_refused(tmp_path, second, why):
    first = _run(tmp_path / "a.json", 7_000_000, [0, 1, 5], [1, 1, 2])
    kw = {"start": 7_000_100, **second}
    other = _run(tmp_path / "b.json", kw.pop("start"), [0, 1, 5], [1, 1, 2], **kw)
    with pytest.raises(SystemExit, match=why):
        volume_map.main([str(first), str(other)])
