"""training.cmb_misses: what became of each true bleed, and the tally by the development set's tags."""
from __future__ import annotations

import json

import numpy as np
import pytest

from training.cmb_misses import bleed_tags, fate, table

CANDS = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [20.0, 0.0, 0.0]])


@pytest.mark.parametrize("centre,found,p,kept,expected", [
    ((0, 0, 1), True, (0.999, 0.5, 0.5), (True, True, True), ("found", 0.999)),
    ((40, 0, 0), False, (0.999, 0.5, 0.5), (True, True, True), ("no candidate", None)),
    ((10, 2, 0), False, (0.5, 0.98, 0.5), (True, True, True), ("below threshold", 0.98)),
    ((10, 0, 2), False, (0.5, 0.999, 0.5), (True, False, True), ("criterion", 0.999)),
    ((20, 0, 0), False, (0.5, 0.5, 0.999), (True, True, True), ("merged", 0.999)),
    # a counted candidate 4 mm off, within the matcher's reach, whose finding matched a neighbour: merged away
    ((24, 0, 0), False, (0.5, 0.5, 0.999), (True, True, True), ("merged", 0.999)),
])
def test_each_fate(centre, found, p, kept, expected):
    assert fate(centre, 3.0, found, CANDS, np.array(p), np.array(kept), 0.995) == expected


def test_the_reach_is_the_matchers_5_mm_or_a_larger_bleeds_diameter():
    far = (0.0, 0.0, 6.5)  # beyond 5 mm, within an 8 mm bleed's diameter
    assert fate(far, 3.0, False, CANDS, np.array([0.2, 0.2, 0.2]), np.ones(3, bool), 0.995)[0] == "no candidate"
    assert fate(far, 8.0, False, CANDS, np.array([0.2, 0.2, 0.2]), np.ones(3, bool), 0.995)[0] == "below threshold"
    assert fate(far, 3.0, False, np.zeros((0, 3)), np.zeros(0), np.zeros(0, bool), 0.995) == ("no candidate", None)


def test_the_table_counts_each_bleed_under_every_tag_and_all():
    bleeds = [dict(tags=["adjacent-pair"], fate="below threshold"),
              dict(tags=["adjacent-pair", "cluster"], fate="found"),
              dict(tags=["isolated"], fate="found"), dict(tags=["isolated"], fate="no candidate")]
    t = table(bleeds)
    assert list(t)[0] == "all" and t["all"]["n"] == 4 and t["all"]["found"] == 0.5
    assert t["adjacent-pair"] == {"n": 2, "found": 0.5, "no candidate": 0, "below threshold": 1, "criterion": 0,
                                  "merged": 0}
    assert t["cluster"]["n"] == 1 and t["isolated"]["no candidate"] == 1


def test_tags_follow_the_truth_order_and_refuse_a_mismatch(tmp_path):
    (tmp_path / "truth.json").write_text(json.dumps({"microbleeds": [{"tags": ["cluster"]}, {}]}))

    class Case:
        bleeds = [{}, {}]

    assert bleed_tags(tmp_path, Case()) == [["cluster"], []]
    Case.bleeds = [{}]
    with pytest.raises(ValueError, match="2 bleeds in truth.json, 1 loaded"):
        bleed_tags(tmp_path, Case())
