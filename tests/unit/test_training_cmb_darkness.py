"""training.cmb_darkness: the table of operating threshold x core-level cut."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training.cmb_darkness import CUTS, MIRROR_CUTS, SURROUND_CUTS, THRESHOLDS, table  # noqa: E402

NONE = dict(max_core_level=None, max_core_to_surround=None, mirror_partner=None)


def test_the_table_sums_each_threshold_and_cut_over_scans():
    """Per case, ``case_findings`` stores the matched (true, false) findings at each threshold and cut (the cut
    applied before merging, as the service does); the table sums them and grades each scan's count. The mirror-twin
    rows are there when the cases have them (``--mirror``)."""
    keys = [f"{t}|{c}" for t in THRESHOLDS for c in CUTS] + [f"{t}|s{c}" for t in THRESHOLDS for c in SURROUND_CUTS]
    counts1 = {k: (2, 1) for k in keys}
    counts1["0.995|0.5"] = (1, 0)
    counts1["0.99|s0.6"] = (2, 0)
    counts2 = {k: (0, 1) for k in keys}
    counts2["0.995|0.5"] = (0, 0)
    counts2["0.99|s0.6"] = (0, 0)
    rows = [dict(seed=1, n_truth=2, finds=[], counts=counts1), dict(seed=2, n_truth=0, finds=[], counts=counts2)]
    t = {(r["threshold"], r["max_core_level"], r["max_core_to_surround"], r["mirror_partner"]): r for r in table(rows)}
    assert len(t) == len(THRESHOLDS) * (len(CUTS) + len(SURROUND_CUTS))
    assert t[(0.9, None, None, None)] == dict(threshold=0.9, **NONE, sensitivity=1.0, fp_per_scan=1.0,
                                              grade_agreement=0.5)  # scan 1: 3 called (grade 1 = truth); scan 2: 1
    assert t[(0.995, 0.5, None, None)] == dict(threshold=0.995, **{**NONE, "max_core_level": 0.5}, sensitivity=0.5,
                                               fp_per_scan=0.0, grade_agreement=1.0)
    assert t[(0.99, None, 0.6, None)] == dict(threshold=0.99, **{**NONE, "max_core_to_surround": 0.6},
                                              sensitivity=1.0, fp_per_scan=0.0, grade_agreement=1.0)
    for r, p in MIRROR_CUTS:
        for thr in THRESHOLDS:
            counts1[f"{thr}|m{r}@{p}"], counts2[f"{thr}|m{r}@{p}"] = (2, 0), (0, 2)
    t = {(r["threshold"], r["mirror_partner"]): r for r in table(rows) if r["mirror_partner"] is not None}
    assert len(t) == len(THRESHOLDS) * len(MIRROR_CUTS)
    r, p = MIRROR_CUTS[0]
    assert t[(0.995, f"{r}@{p}")] == dict(threshold=0.995, **{**NONE, "mirror_partner": f"{r}@{p}"},
                                          sensitivity=1.0, fp_per_scan=1.0, grade_agreement=0.5)


def test_the_hessian_tells_a_dark_blob_from_a_dark_tube_on_thick_and_tilted_slices():
    """A dark ball gives three equal positive eigenvalues; a dark tube one near 0 (its axis) and two positive."""
    import numpy as np

    from training.cmb_darkness import hessian_eigenvalues

    from .test_measure import tilted_volume

    for spacing, tilt in ((1.0, 0.0), (2.5, 15.0)):
        vol = tilted_volume((24, 60, 60), pixel=0.8, spacing=spacing, tilt_deg=tilt)
        arr = np.full(vol.shape, 100.0, np.float32)
        pts = vol.positions[:, None, None, :]  # each slice's first voxel
        ii, jj = np.mgrid[:60, :60]
        xyz = (pts + ii[None, :, :, None] * 0.8 * np.asarray(vol.column_direction)
               + jj[None, :, :, None] * 0.8 * np.asarray(vol.row_direction))  # patient mm of every voxel
        centre = xyz[12, 20, 20]
        arr[np.linalg.norm(xyz - centre, axis=-1) <= 2.5] = 10.0  # a 5 mm ball
        on_tube = xyz[12, 40, 40]
        arr[np.linalg.norm((xyz - on_tube)[..., :2], axis=-1) <= 1.5] = 10.0  # a 3 mm tube along patient z
        vol = tilted_volume(vol.shape, pixel=0.8, spacing=spacing, tilt_deg=tilt, array=arr)
        blob = hessian_eigenvalues(vol, (12, 20, 20), 5.0)
        tube = hessian_eigenvalues(vol, (12, 40, 40), 3.0)
        assert blob[0] > 0.4 * blob[2] > 0, (spacing, blob)
        assert abs(tube[0]) < 0.1 * tube[2], (spacing, tube)
