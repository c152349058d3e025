"""The darkness criterion (``measure.darkness``): a microbleed candidate must be black near its centre."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from svdmark.domain import Manifest, ManifestFieldError, ModelSpec, Task
from svdmark.infer.runtime import Candidate, ModelOutput
from svdmark.measure import counted_candidates, from_output
from svdmark.measure.darkness import core_levels, surround_levels

from .test_measure import tilted_volume

REF = 200.0  # the foreground median the runtime normalised by


def _head(shape=(12, 48, 48), spacing=3.0, tilt=0.0):
    """Uniform tissue at REF with a black focus (0.05 x REF, one voxel) at (5, 20, 20) and a grey one (0.7 x REF,
    3x3 in-plane) at (5, 30, 30)."""
    arr = np.full(shape, REF, np.float32)
    arr[5, 20, 20] = 0.05 * REF
    arr[5, 29:32, 29:32] = 0.7 * REF
    return tilted_volume(shape, pixel=0.7, spacing=spacing, tilt_deg=tilt, array=arr)


def _spec(max_core_level=None, max_core_to_surround=None, **sections) -> ModelSpec:
    out = {"name": "output", "threshold": 0.5, "merge_mm": 1.5}
    if max_core_level is not None:
        out["max_core_level"] = max_core_level
    if max_core_to_surround is not None:
        out["max_core_to_surround"] = max_core_to_surround
    return ModelSpec("cmb-test", "1.0.0", Task.CMB, "0" * 64, Path("model.onnx"), {
        "name": "cmb-test", "version": "1.0.0", "task": "cmb", "modality": "MR", "sha256": "0" * 64,
        "input": {"kind": "patch3d", "normalisation": {"type": "foreground_median"}}, "output": out, **sections})


def _output(*cands) -> ModelOutput:
    return ModelOutput(Task.CMB, "0" * 64, "cpu", 0.0, candidates=tuple(cands),
                       extras={"reference_intensity": REF})


@pytest.mark.parametrize("tilt", [0.0, 20.0])
def test_core_level_is_the_darkest_voxel_within_the_radius_in_millimetres(tilt):
    vol = _head(tilt=tilt)
    black, grey, off = (5, 20, 20), (5, 30, 30), (5, 10, 40)
    lv = core_levels(vol, [black, grey, off], [0.0, 0.0, 0.0], REF)
    assert lv == pytest.approx([0.05, 0.7, 1.0])
    # one voxel (0.7 mm) beside the black voxel: within the 1 mm minimum radius of a bleed of no size
    assert core_levels(vol, [(5, 20, 21)], [0.0], REF)[0] == pytest.approx(0.05)
    # 1.5 voxels (1.05 mm) beside it: outside the 1 mm minimum radius, inside a 3 mm bleed's
    beside = (5, 20, 21.5)
    assert core_levels(vol, [beside], [0.0], REF)[0] == pytest.approx(1.0)
    assert core_levels(vol, [beside], [3.0], REF)[0] == pytest.approx(0.05)
    # one slice away is 3 mm through-plane: not within a 4 mm bleed's radius, within a 7 mm one's
    above = (6, 20, 20)
    assert core_levels(vol, [above], [4.0], REF)[0] == pytest.approx(1.0)
    assert core_levels(vol, [above], [7.0], REF)[0] == pytest.approx(0.05)


def test_a_grey_candidate_is_not_counted_when_the_manifest_sets_a_core_level():
    vol = _head()
    black = Candidate((5.0, 20.0, 20.0), 0.99, 2.0)
    grey = Candidate((5.0, 30.0, 30.0), 0.999, 2.0)
    out = _output(black, grey)
    assert len(counted_candidates(_spec().manifest, vol, out)) == 2  # no criterion in the manifest: every candidate
    kept = counted_candidates(_spec(0.5).manifest, vol, out)
    assert kept == [(black.index, black.probability, black.diameter_mm)]
    both = [(c.index, c.probability, c.diameter_mm) for c in (black, grey)]
    assert counted_candidates(_spec(0.75).manifest, vol, out) == both
    assert counted_candidates(_spec(0.7).manifest, vol, out) == both  # at the level exactly: dark enough
    assert from_output(_spec(), vol, out).count == 2
    f = from_output(_spec(0.5), vol, out)
    assert f.count == 1 and f.microbleeds[0].confidence == pytest.approx(0.99)


def test_the_interval_counts_the_same_candidates_and_the_gate_scores_them_all():
    """The count's interval is read at other thresholds of the filtered list; the gate's candidate density scores
    the candidate stage, so every candidate."""
    from svdmark.measure import quality

    vol = _head()
    out = _output(Candidate((5.0, 20.0, 20.0), 0.99, 2.0), Candidate((5.0, 30.0, 30.0), 0.999, 2.0),
                  Candidate((5.0, 40.0, 10.0), 0.6, 2.0))  # a third, grey and below the operating threshold
    spec = _spec(0.5, uncertainty={"cmb": {"threshold_low": 0.3, "threshold_high": 0.995}},
                 quality={"limits": {"candidates_per_ml": {"max": 1e9}}})
    f = from_output(spec, vol, out)
    assert f.count == 1 and (f.interval.low, f.interval.high) == (0.0, 1.0)  # unfiltered it would be (1, 3)
    assert from_output(_spec(uncertainty=spec.manifest["uncertainty"]), vol, out).interval.high == 3.0
    assert f.quality.scores["candidates_per_ml"] == pytest.approx(quality.candidate_density(vol, REF, 3), rel=1e-3)


def _dim_head(spacing=1.0, tilt=0.0):
    """Tissue at REF with a dim region (0.4 x REF, 15 voxels = 10.5 mm square, 7 slices) holding a focus at 0.3 x
    REF (one voxel) at its centre (5, 20, 20), and a focus at 0.3 x REF in the bright tissue at (5, 40, 40)."""
    arr = np.full((12, 56, 56), REF, np.float32)
    arr[2:9, 13:28, 13:28] = 0.4 * REF
    arr[5, 20, 20] = arr[5, 40, 40] = 0.3 * REF
    return tilted_volume(arr.shape, pixel=0.7, spacing=spacing, tilt_deg=tilt, array=arr)


@pytest.mark.parametrize("tilt", [0.0, 20.0])
def test_the_surround_is_the_median_of_the_shell_beyond_the_core(tilt):
    vol = _dim_head(tilt=tilt)
    dim, bright = (5, 20, 20), (5, 40, 40)
    # the shell from 2 to 4 mm around a bleed of no size (radius 1 mm) lies in the dim region; around the other
    # focus, in the bright tissue
    assert surround_levels(vol, [dim, bright], [0.0, 0.0], REF) == pytest.approx([0.4, 1.0])
    # a 9 mm bleed's shell (5.5 to 7.5 mm) lies mostly beyond the dim region's 5.25 mm half-width
    assert surround_levels(vol, [dim], [9.0], REF)[0] == pytest.approx(1.0)
    assert np.isnan(surround_levels(vol, [(5, 200, 200)], [0.0], REF)[0])  # off the grid


def test_a_focus_grey_against_its_surroundings_is_not_counted():
    """Both foci have the same core level (0.3); the one in dim tissue is only 0.75 of its surroundings."""
    vol = _dim_head()
    in_dim = Candidate((5.0, 20.0, 20.0), 0.99, 0.0)
    in_bright = Candidate((5.0, 40.0, 40.0), 0.99, 0.0)
    out = _output(in_dim, in_bright)
    keep = counted_candidates(_spec(max_core_to_surround=0.6).manifest, vol, out)
    assert keep == [(in_bright.index, in_bright.probability, in_bright.diameter_mm)]
    assert len(counted_candidates(_spec(max_core_to_surround=0.8).manifest, vol, out)) == 2
    assert len(counted_candidates(_spec(0.25, 0.8).manifest, vol, out)) == 0  # both criteria apply
    assert from_output(_spec(max_core_to_surround=0.6), vol, out).count == 1


def test_the_core_level_is_a_number_in_the_manifest():
    base = _spec().manifest
    raw = {**dict(base), "output": {**base["output"], "max_core_level": "dark"}}
    with pytest.raises(ManifestFieldError, match="max_core_level"):
        Manifest.from_json(raw)
    assert np.isinf(base.output.max_core_level)
    off = Manifest.from_json({**dict(base), "output": {**base["output"], "max_core_level": None,
                                                        "max_core_to_surround": None}})
    assert np.isinf(off.output.max_core_level) and np.isinf(off.output.max_core_to_surround)  # null: no criterion
    assert np.isinf(base.output.max_core_to_surround)
    with pytest.raises(ManifestFieldError, match="max_core_to_surround"):
        Manifest.from_json({**dict(base), "output": {**base["output"], "max_core_to_surround": [0.5]}})
