"""training.cmb_sites: false findings by the nearest truth mimic, and the oracle exclusion's bound."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training.cmb_sites import called, nearest_site, tally  # noqa: E402


def find(x, tp=False, p=0.999, core=0.1, surround=1.0, label="white matter"):
    return dict(center_mm=[x, 0.0, 0.0], tp=tp, probability=p, core_level=core, surround_level=surround, label=label)


MIMICS = [dict(kind="calcification", site="pineal", center_mm=[0.0, 0.0, 0.0]),
          dict(kind="iron-rich nucleus", site="red nucleus", center_mm=[20.0, 0.0, 0.0]),
          dict(kind="iron-rich nucleus", site="pallidum")]  # no centre: never matched


def test_a_finding_is_called_as_the_service_calls_it():
    assert called(find(0), 0.99, 0.6)
    assert not called(find(0, p=0.98), 0.99, 0.6)
    assert not called(find(0, core=0.7), 0.99, 0.6)  # brighter than 0.6 x its surroundings
    assert called(find(0, core=0.7, surround=1.2), 0.99, 0.6)


def test_the_nearest_mimic_within_the_radius_names_the_site():
    assert nearest_site([1.0, 0, 0], MIMICS, 6.0) == "calcification: pineal"
    assert nearest_site([15.0, 0, 0], MIMICS, 6.0) == "iron-rich nucleus: red nucleus"
    assert nearest_site([10.0, 0, 0], MIMICS, 6.0) is None  # 10 mm from both


def test_tally_counts_false_findings_by_site_and_the_oracle_bound():
    case = dict(finds=[find(0.5), find(2.0, p=0.5), find(19.0), find(50.0, label="vein (>=50% voxel)"),
                       find(3.0, tp=True), find(40.0, tp=True)])
    out = tally([(case, dict(mimics=MIMICS))], 0.99, 0.6, 6.0, oracle=("pineal",))
    assert out["heads"] == 1 and out["false_findings"] == 3  # the finding at p 0.5 is not called
    assert out["by_site"] == {"calcification: pineal": 1, "iron-rich nucleus: red nucleus": 1,
                              "no mimic within 6 mm (vein)": 1}
    assert out["oracle_removes"] == {"false": 1, "true": 1}  # the true bleed 3 mm from the pineal is lost too
