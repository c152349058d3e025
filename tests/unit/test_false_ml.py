"""training.false_ml splits counted millilitres into on-lesion and off-lesion by the head's labels."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training import false_ml  # noqa: E402


def test_by_label_splits_on_and_off_lesion_and_names_the_tissue():
    labels = np.ones((2, 10, 10), np.uint8)  # white matter
    labels[:, :, :3] = 4  # ventricle
    truth = np.zeros((2, 10, 10), np.float32)
    truth[:, 5:8, 5:8] = 1.0
    truth[0, 4, 5] = 0.01  # below the rim: not lesion
    counted = np.zeros_like(truth)
    counted[:, 5:8, 5:8] = 0.5  # 9 voxels x 2 slices x 0.5 on the lesion
    counted[:, 0:2, 0:3] = 1.0  # 12 voxels in the ventricle
    counted[0, 4, 5] = 1.0  # one in white matter
    r = false_ml.by_label(counted, truth, labels, {"1": "white matter", "4": "ventricle"}, voxel_ml=0.5)
    assert r["on_lesion"] == 9 * 2 * 0.5 * 0.5
    assert r["off_by_label"] == {"ventricle": 6.0, "white matter": 0.5} and r["off_lesion"] == 6.5


def test_summary_totals_and_bins_the_heads_by_their_csf_gap():
    rows = [dict(truth_ml=0.0, on_lesion=0.0, off_lesion=5.0, off_by_label={"ventricle": 4.0, "cortex": 1.0},
                 wm_minus_csf_hu=13.0),
            dict(truth_ml=3.0, on_lesion=2.0, off_lesion=1.0, off_by_label={"cortex": 1.0}, wm_minus_csf_hu=18.0),
            dict(truth_ml=1.0, on_lesion=0.5, off_lesion=0.2, off_by_label={}, wm_minus_csf_hu=24.0)]
    s = false_ml.summary(rows)
    assert s["off_by_label"] == {"ventricle": 4.0, "cortex": 2.0}
    assert (s["truth_total"], s["on_lesion_total"], s["off_lesion_total"]) == (4.0, 2.5, 6.2)
    assert list(s["off_by_csf_gap"]) == ["16-20", "< 16", ">= 20"]
    assert s["off_by_csf_gap"]["< 16"] == {"heads": 1, "mean": 5.0, "median": 5.0}
