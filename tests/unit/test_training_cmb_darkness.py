"""training.cmb_darkness: the table of operating threshold x core-level cut counts what the service would count."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training.cmb_darkness import table  # noqa: E402


def _find(p, level, tp):
    return dict(probability=p, diameter_mm=2.0, tp=tp, core_level=level, label=None)


def test_the_table_applies_the_threshold_and_the_cut_together():
    rows = [dict(seed=1, n_truth=2, finds=[_find(0.999, 0.05, True), _find(0.999, 0.7, False),
                                           _find(0.92, 0.1, True)]),
            dict(seed=2, n_truth=0, finds=[_find(0.996, 0.45, False)])]
    t = {(r["threshold"], r["max_core_level"]): r for r in table(rows)}
    assert t[(0.9, None)]["sensitivity"] == 1.0 and t[(0.9, None)]["fp_per_scan"] == 1.0
    assert t[(0.995, None)]["sensitivity"] == 0.5 and t[(0.995, None)]["fp_per_scan"] == 1.0
    assert t[(0.995, 0.5)]["fp_per_scan"] == 0.5 and t[(0.995, 0.4)]["fp_per_scan"] == 0.0
    # grades: scan 1 has 2 bleeds (grade 1); scan 2 none (grade 0)
    assert t[(0.9, 0.4)]["grade_agreement"] == 1.0
    assert t[(0.995, 0.5)]["grade_agreement"] == 0.5
