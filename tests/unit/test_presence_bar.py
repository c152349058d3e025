"""training.presence_bar: which heads a presence bar calls bleed-free, and the figures that follow."""
from __future__ import annotations

from training.presence_bar import clears, table


def _find(p: float, core: float = 0.2, surround: float = 1.0, tp: bool = True) -> dict:
    return dict(probability=p, core_level=core, surround_level=surround, tp=tp)


def test_the_bar_looks_only_at_counted_findings():
    finds = [_find(0.9999, core=0.1), _find(0.996, core=0.45)]
    assert clears(finds, "p", 0.999) and not clears(finds[1:], "p", 0.999)
    assert clears(finds[1:], "s", 0.5) and not clears(finds[1:], "s", 0.4)
    assert not clears([_find(0.99, core=0.1)], "s", 0.5)  # below the operating threshold: not counted
    assert clears(finds, "k", 2) and not clears(finds[1:], "k", 2)
    assert clears([], "none", None)


def test_a_zeroed_head_loses_its_findings_and_its_grade_moves_to_0():
    rows = [dict(n_truth=0, counts={"0.995|None": [0, 2]}, finds=[_find(0.996, tp=False), _find(0.997, tp=False)]),
            dict(n_truth=3, counts={"0.995|None": [3, 0]}, finds=[_find(0.9999)] * 3),
            dict(n_truth=1, counts={"0.995|None": [1, 0]}, finds=[_find(0.996)])]
    by = {(t["bar"], t["value"]): t for t in table(rows)}
    none, bar = by[("none", None)], by[("p", 0.999)]
    assert (none["sensitivity"], none["fp_per_scan"], none["grade_agreement"]) == (1.0, 2 / 3, 2 / 3)
    assert (bar["sensitivity"], bar["fp_per_scan"], bar["grade_agreement"]) == (0.75, 0.0, 2 / 3)
    assert (bar["heads_zeroed"], bar["heads_with_a_true_bleed_zeroed"]) == (2, 1)
    assert by[("k", 2)]["heads_zeroed"] == 1 and by[("k", 2)]["grade_agreement"] == 1 / 3
