"""training.neighbour_probe: which candidates a counted neighbour recruits, and the table of the probe."""
from __future__ import annotations

import numpy as np

from training.neighbour_probe import GRID, recruited, table


def test_a_candidate_is_recruited_only_beside_one_that_clears_the_threshold():
    xyz = np.array([[0.0, 0, 0], [4.0, 0, 0], [9.0, 0, 0], [30.0, 0, 0], [34.0, 0, 0]])
    p = np.array([0.999, 0.96, 0.97, 0.97, 0.97])
    assert recruited(xyz, p, 0.995, 5.0, 0.95).tolist() == [True, True, False, False, False]
    # one pass: the second candidate, once recruited, does not recruit the third (5 mm from it)
    assert recruited(xyz, p, 0.995, 5.0, 0.95)[2] == np.False_
    assert recruited(xyz, p, 0.995, 10.0, 0.95).tolist() == [True, True, True, False, False]
    assert recruited(xyz, p, 0.995, 5.0, 0.965).tolist() == [True, False, False, False, False]
    assert not recruited(xyz, np.full(5, 0.99), 0.995, 50.0, 0.9).any()  # nothing strong: nothing recruited
    assert recruited(np.zeros((0, 3)), np.zeros(0), 0.995, 5.0, 0.9).shape == (0,)


def test_the_table_sums_scans_and_grades_each_count():
    keys = ["none"] + [f"{r}|{t2}" for r, t2 in GRID]
    c1 = {k: (9, 0) for k in keys}
    c1["5.0|0.95"] = (10, 1)  # 11 called: grade 2 (truth 10: grade 2)
    c2 = {k: (0, 1) for k in keys}
    rows = [dict(n_truth=10, counts=c1), dict(n_truth=0, counts=c2)]
    t = {(r["radius_mm"], r["t2"]): r for r in table(rows)}
    assert list(t)[0] == (None, None) and len(t) == 1 + len(GRID)
    assert t[(None, None)] == dict(radius_mm=None, t2=None, sensitivity=0.9, fp_per_scan=0.5, grade_agreement=0.0)
    assert t[(5.0, 0.95)] == dict(radius_mm=5.0, t2=0.95, sensitivity=1.0, fp_per_scan=1.0, grade_agreement=0.5)
