"""svdmark.measure: physical WML volume on sheared grids, CMB centres in patient coordinates."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from svdmark.domain import BurdenGrade, FrameRef, Volume
from svdmark.infer.preprocess import index_affine, patient_to_index, sample_patches
from svdmark.measure import cmb_findings, wml_findings


def tilted_volume(shape, pixel=0.7, spacing=3.0, tilt_deg=20.0, origin=(-40.0, -50.0, -30.0), array=None):
    t = np.radians(tilt_deg)
    row = (1.0, 0.0, 0.0)
    col = (0.0, float(np.cos(t)), float(-np.sin(t)))
    step = np.array([0.0, 0.0, spacing / np.cos(t)])  # table moves along z: sheared stack
    positions = np.asarray(origin)[None, :] + np.arange(shape[0])[:, None] * step[None, :]
    return Volume(
        array=np.zeros(shape, np.float32) if array is None else array, row_direction=row, column_direction=col,
        pixel_spacing=(pixel, pixel), positions=positions,
        frames=tuple(FrameRef(f"2.25.{k}", "1.2.840.10008.5.1.4.1.1.2") for k in range(shape[0])),
        frame_of_reference_uid="2.25.7", slice_thickness=spacing,
    )


def ball_fraction(vol: Volume, centre_mm, radius, sub=4):
    """Exact-ish partial-volume fraction of a ball per voxel by sub-sampling each (sheared) voxel."""
    frac = np.zeros(vol.shape, np.float32)
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    kij = np.stack(np.meshgrid(*(np.arange(n, dtype=float) for n in vol.shape), indexing="ij"), -1)
    for a in offs:
        for b in offs:
            for c in offs:
                xyz = (kij + [a, b, c]) @ index_affine(vol).T + vol.positions[0]
                frac += (np.linalg.norm(xyz - centre_mm, axis=-1) <= radius).astype(np.float32)
    return frac / sub**3


def test_wml_volume_is_physical_on_a_tilted_grid():
    vol = tilted_volume((14, 56, 56), pixel=1.2, spacing=3.0, tilt_deg=22.0)
    assert vol.gantry_tilt_degrees == pytest.approx(22.0, abs=1e-6)
    centre = vol.index_to_patient(7, 28, 28)
    r = 12.0
    frac = ball_fraction(vol, centre, r)
    truth_ml = 4 / 3 * np.pi * r**3 / 1000
    f = wml_findings(vol, frac)
    assert f.volume_ml == pytest.approx(truth_ml, rel=0.02)
    # the step length (3/cos 22° mm) would overstate the volume by 8 %: make sure it is not used
    wrong = frac.sum() * 1.2 * 1.2 * np.linalg.norm(vol.slice_step) / 1000
    assert abs(wrong - truth_ml) / truth_ml > 0.06
    assert f.mask.dtype == np.uint8 and f.mask.shape == vol.shape
    assert f.mask.sum() * vol.voxel_volume_mm3 / 1000 == pytest.approx(truth_ml, rel=0.15)


def test_an_unevenly_spaced_stack_measures_each_slice_by_its_own_spacing():
    """4 mm slices then 5.5 mm ones (within the missing-slice limit, so loaded with a warning): a lesion in the
    thicker zone is as large as its slices are thick, not as the stack's mean step says."""
    d = np.concatenate([np.arange(6) * 4.0, 20.0 + np.arange(1, 9) * 5.5])
    base = tilted_volume((len(d), 20, 20), pixel=1.0, spacing=4.0, tilt_deg=0.0)
    vol = dataclasses.replace(base, positions=np.stack([np.zeros(len(d)), np.zeros(len(d)), d], 1))
    assert np.allclose(vol.slice_heights_mm[7:-1], 5.5) and np.allclose(vol.slice_heights_mm[1:5], 4.0)
    frac = np.zeros(vol.shape, np.float32)
    frac[8:11, 5:15, 5:15] = 1.0  # three whole 5.5 mm slices: 100 mm2 x 16.5 mm
    assert wml_findings(vol, frac).volume_ml == pytest.approx(100 * 3 * 5.5 / 1000)
    assert vol.slice_spacing < 5.0  # the mean step would have said about 10 % less
    even = tilted_volume((5, 20, 20), pixel=1.0, spacing=5.0, tilt_deg=0.0)
    assert np.allclose(even.slice_heights_mm, even.slice_spacing)  # an even stack: what it always was
    assert vol.physical_ml(np.ones(vol.shape)) == pytest.approx(400 * (d[-1] - d[0] + 4.0 / 2 + 5.5 / 2) / 1000)


def test_wml_volume_counts_partial_volume_of_thin_lesions():
    # a 2 mm-thin slab lesion inside one 5 mm slice: fraction 0.4 everywhere → no voxel ≥ 0.5
    vol = tilted_volume((5, 20, 20), pixel=1.0, spacing=5.0, tilt_deg=0.0)
    frac = np.zeros(vol.shape, np.float32)
    frac[2, 5:15, 5:15] = 0.4
    f = wml_findings(vol, frac)
    assert f.volume_ml == pytest.approx(100 * 5 * 0.4 / 1000)
    assert f.mask.sum() == 0


def test_wml_support_keeps_lesion_rims_and_drops_diffuse_background():
    vol = tilted_volume((6, 40, 40), pixel=1.0, spacing=5.0, tilt_deg=0.0)
    frac = np.full(vol.shape, 0.03, np.float32)  # diffuse model background over the whole head
    frac[2, 10:20, 10:20] = 0.9  # a lesion core ...
    frac[2, 9, 10:20] = frac[2, 20, 10:20] = 0.2  # ... with its partial-volume rim
    frac[3, 10:20, 10:20] = 0.1  # and its thin tail in the next (thick) slice
    lesion = (100 * 0.9 + 20 * 0.2 + 100 * 0.1) * 5 / 1000
    raw = wml_findings(vol, frac)
    assert raw.volume_ml > lesion + 1.0  # the background dominates without support
    f = wml_findings(vol, frac, support_threshold=0.5, support_dilate_vox=2)
    assert f.volume_ml == pytest.approx(lesion + 0.03 * 5 / 1000 * (_support_voxels() - 120 - 100), rel=1e-6)
    # a floor then removes the remaining background inside the support region, keeping the rim and the tail
    g = wml_findings(vol, frac, fraction_floor=0.05, support_threshold=0.5, support_dilate_vox=2)
    assert g.volume_ml == pytest.approx(lesion, rel=1e-6)
    assert wml_findings(vol, np.full(vol.shape, 0.03, np.float32), support_threshold=0.5).volume_ml == 0.0


def _support_voxels() -> int:
    from scipy import ndimage as ndi

    seed = np.zeros((6, 40, 40), bool)
    seed[2, 10:20, 10:20] = True
    st = np.zeros((3, 3, 3), bool)
    st[1] = ndi.generate_binary_structure(2, 1)
    seed = ndi.binary_dilation(seed, structure=st, iterations=2)
    return int(ndi.binary_dilation(seed, structure=np.ones((3, 1, 1), bool)).sum())


def test_cmb_centres_map_to_patient_coordinates_on_a_sheared_grid():
    vol = tilted_volume((20, 64, 64), pixel=0.9, spacing=2.0, tilt_deg=15.0)
    truth = [vol.index_to_patient(*kij) for kij in ((4.3, 10.2, 50.7), (9.0, 33.5, 20.25), (15.6, 50.0, 12.0))]
    # independent check of the first: slice position + column/row offsets along the tilted directions
    manual = (vol.positions[4] * 0.7 + vol.positions[5] * 0.3 + 50.7 * 0.9 * np.array(vol.row_direction)
              + 10.2 * 0.9 * np.array(vol.column_direction))
    np.testing.assert_allclose(truth[0], manual, atol=1e-9)
    cands = [(tuple(patient_to_index(vol, p)), 0.9, 4.0) for p in truth]
    cands.append(((10.0, 30.0, 30.0), 0.2, 4.0))  # below threshold
    cands.append((tuple(patient_to_index(vol, truth[0] + [1.0, 0, 0])), 0.8, 4.0))  # duplicate of the first
    f = cmb_findings(vol, cands, threshold=0.5, merge_mm=3.0)
    assert f.count == 3 and f.grade is BurdenGrade.LOW
    for b, t in zip(f.microbleeds, truth):
        np.testing.assert_allclose(b.center_mm, t, atol=1e-6)
        assert b.diameter_mm == 4.0 and 0 <= b.confidence <= 1
    # index_to_patient ∘ patient_to_index is the identity
    for t in truth:
        np.testing.assert_allclose(vol.index_to_patient(*patient_to_index(vol, t)), t, atol=1e-9)
    # the mask holds a ball of about the right physical size at each centre
    ml = f.mask.sum() * vol.voxel_volume_mm3
    assert ml == pytest.approx(3 * 4 / 3 * np.pi * 2.0**3, rel=0.5)
    k, i, j = np.round(patient_to_index(vol, truth[1])).astype(int)
    assert f.mask[k, i, j] == 1


def test_cmb_grade_thresholds():
    vol = tilted_volume((10, 200, 200), pixel=1.0, spacing=2.0, tilt_deg=0.0)
    def n_bleeds(n):
        cands = [((5.0, 10.0 + 12 * (q % 15), 10.0 + 12 * (q // 15)), 0.9, 3.0) for q in range(n)]
        return cmb_findings(vol, cands, threshold=0.5, merge_mm=4.0)
    assert n_bleeds(0).grade is BurdenGrade.NONE
    assert n_bleeds(9).grade is BurdenGrade.LOW
    assert n_bleeds(10).grade is BurdenGrade.MODERATE
    assert n_bleeds(30).grade is BurdenGrade.MODERATE
    assert n_bleeds(31).grade is BurdenGrade.HIGH


def test_patches_are_isotropic_in_physical_space():
    # a ball of radius 3 mm on an anisotropic sheared grid looks round in the resampled patch
    vol = tilted_volume((24, 48, 48), pixel=0.5, spacing=2.0, tilt_deg=20.0)
    centre = vol.index_to_patient(12, 24, 24)
    arr = 1.0 - ball_fraction(vol, centre, 3.0, sub=2)
    p = sample_patches(arr, vol, np.array([[12.0, 24.0, 24.0]]), size=15, spacing_mm=1.0, fill=1.0)[0]
    dark = p < 0.5
    ext = [np.ptp(np.nonzero(dark)[a]) + 1 for a in range(3)]
    assert all(5 <= e <= 7 for e in ext), ext


def test_ct_noise_is_scored_on_the_slabs_the_model_reads():
    """A 0.625 mm stack read as 2.5 mm slabs (4 slices each): the gate's noise score is the slabs' (about half),
    while coverage and tissue level stay the source stack's."""
    from svdmark.measure import quality

    rng = np.random.default_rng(0)
    arr = (30 + 8 * rng.standard_normal((40, 64, 64))).astype(np.float32)
    vol = tilted_volume(arr.shape, spacing=0.625, tilt_deg=0.0, array=arr)
    thin, slabs = quality.ct_scores(vol), quality.ct_scores(vol, slab_group=4)
    assert 6.0 < thin["noise"] < 10.0
    assert 0.4 < slabs["noise"] / thin["noise"] < 0.6
    assert slabs["coverage_mm"] == thin["coverage_mm"] and slabs["tissue_level"] == thin["tissue_level"]


def test_ct_noise_is_read_on_integer_hu_smoothed_by_a_brain_kernel():
    """Integer HU with kernel-smoothed noise: the residual to a 3x3 median is 0 in most voxels, so its MAD reads 0
    at 0.9 and 1.7 HU of noise; the residual to the 8 neighbours' mean rises with the noise from above 0. Each
    manifest names the score its limit was set on; those without one keep the median's."""
    import json
    from pathlib import Path

    from scipy import ndimage

    from svdmark.domain import NOISE_SCORES, Manifest, ManifestFieldError
    from svdmark.measure import quality

    rng = np.random.default_rng(0)
    scores, median = [], []
    for sd in (3.0, 6.0, 12.0):
        noise = ndimage.gaussian_filter(rng.standard_normal((12, 96, 96)) * sd, (0, 1.0, 1.0))
        vol = tilted_volume((12, 96, 96), spacing=5.0, tilt_deg=0.0, array=np.round(30 + noise).astype(np.float32))
        scores.append(quality.ct_scores(vol, noise_score="neighbour_mean")["noise"])
        median.append(quality.ct_scores(vol)["noise"])
    assert median[:2] == [0.0, 0.0]
    assert set(quality._CT_RESIDUALS) == set(NOISE_SCORES)  # every name a manifest may give has a residual
    assert 0.3 < scores[0] < scores[1] < scores[2] < 3.43  # high-pass: under the smoothed noise's own SD

    models = Path(__file__).resolve().parents[2] / "service" / "svdmark" / "data" / "models" / "wml-ncct"
    read = {v: json.loads((models / v / "manifest.json").read_text()) for v in ("1.12.2", "1.12.5")}
    assert [Manifest.from_json(m).noise_score for m in read.values()] == ["median", "neighbour_mean"]
    read["1.12.5"]["quality"]["noise_score"] = "mean"
    with pytest.raises(ManifestFieldError, match="quality.'noise_score'"):
        Manifest.from_json(read["1.12.5"])


def test_wml_support_reaches_one_slab_through_plane_when_the_model_read_slabs():
    """Post-processing on a thin stack read as 4-slice slabs equals post-processing on the slab grid itself: the
    support's "one slice through-plane" is one slab (four source slices), so the rim slabs count whole."""
    from svdmark.measure import wml_volume_ml

    slab_frac = np.zeros((5, 16, 16), np.float32)
    slab_frac[1:4, 6:10, 6:10] = [[[0.4]], [[0.9]], [[0.4]]]  # a core slab with partial-volume slabs either side
    thick = tilted_volume(slab_frac.shape, pixel=1.0, spacing=2.5, tilt_deg=0.0)
    thin = tilted_volume((20, 16, 16), pixel=1.0, spacing=0.625, tilt_deg=0.0)
    post = dict(support_threshold=0.7, support_dilate_vox=1)
    on_slabs = wml_volume_ml(thick, slab_frac, **post)
    expanded = np.repeat(slab_frac, 4, axis=0)
    assert abs(wml_volume_ml(thin, expanded, **post, slab_group=4) - on_slabs) < 1e-9
    assert wml_volume_ml(thin, expanded, **post) < 0.8 * on_slabs  # one source slice would cut the rim slabs
    # 22 slices: the last slab holds the short rest (slices 16-21) and still counts whole next to a seed slab
    last = np.zeros((22, 16, 16), np.float32)
    last[12:16, 6:10, 6:10], last[16:, 6:10, 6:10] = 0.9, 0.4
    vol22 = tilted_volume(last.shape, pixel=1.0, spacing=0.625, tilt_deg=0.0)
    assert abs(wml_volume_ml(vol22, last, **post, slab_group=4) - wml_volume_ml(vol22, last)) < 1e-9


def test_the_wml_gate_scores_noise_on_the_slabs_a_min_slice_model_reads():
    """from_output: a manifest with input.min_slice_mm 2.5 gates a noisy 0.625 mm stack on its slabs' noise."""
    from pathlib import Path
    from types import SimpleNamespace

    from svdmark.domain import ModelSpec, Task
    from svdmark.measure import from_output

    rng = np.random.default_rng(1)
    arr = (30 + 8 * rng.standard_normal((40, 64, 64))).astype(np.float32)
    vol = tilted_volume(arr.shape, spacing=0.625, tilt_deg=0.0, array=arr)

    def spec(min_slice_mm):
        return ModelSpec("wml-test", "1.0.0", Task.WML, "0" * 64, Path("model.onnx"), {
            "name": "wml-test", "version": "1.0.0", "task": "wml", "modality": "CT", "sha256": "0" * 64,
            "input": {"kind": "slice2d", "normalisation": {"type": "hu_window", "center": 30.0, "scale": 20.0},
                      "min_slice_mm": min_slice_mm},
            "output": {"name": "fraction", "mask_threshold": 0.5}, "quality": {"limits": {"noise": {"max": 6.0}}}})

    out = SimpleNamespace(fraction=np.zeros(arr.shape, np.float32), passes=())
    thin, slabs = from_output(spec(0.0), vol, out).quality, from_output(spec(2.5), vol, out).quality
    assert not thin.measurable and thin.scores["noise"] > 6.0
    assert slabs.measurable and slabs.scores["noise"] < 6.0


def test_the_post_processing_sweep_measures_what_the_runtime_measures():
    """training.evaluate's sweep gives, for every (floor, support) it tries, ``wml_volume_ml``'s volume, slabs
    included (the sweep chooses the manifest's post-processing; a twin of the support step would choose for
    another measurement)."""
    from svdmark.measure import wml_volume_ml
    from training.evaluate import WML_SWEEP, _wml_sweep_case

    rng = np.random.default_rng(3)
    frac = np.clip(rng.normal(0.05, 0.1, (22, 24, 24)), 0, 1).astype(np.float32)
    frac[8:14, 8:14, 8:14] = 0.85
    frac[14:18, 8:14, 8:14] = 0.35
    vol = tilted_volume(frac.shape, pixel=1.0, spacing=0.625, tilt_deg=0.0)
    for group in (1, 4):
        got = _wml_sweep_case(vol, frac, frac >= 0.5, group)["volumes"]
        assert len(got) == len(WML_SWEEP["fraction_floor"]) * len(WML_SWEEP["support"])
        for (fl, st, dil), v in got.items():
            want = wml_volume_ml(vol, frac, fraction_floor=fl, support_threshold=st, support_dilate_vox=dil,
                                 slab_group=group)
            assert abs(v - want) < 1e-9, (group, fl, st, dil)
    one, four = (_wml_sweep_case(vol, frac, frac >= 0.5, g)["volumes"][(0.1, 0.7, 3)] for g in (1, 4))
    assert four > one  # the slab reaches the partial-volume slices that one thin slice does not


def test_the_sweep_scores_both_volume_targets():
    """The sweep's target score weighs the overall MAE by its 1 mL target and the MAE under 1 mL by its 0.5 mL
    target: a setting that reads small heads high scores worse than one with the same overall MAE that does not."""
    from training.evaluate import _wml_sweep_row

    truth = np.array([0.0, 0.5, 5.0, 20.0])
    low_end_wrong = _wml_sweep_row((0.05, 0.7, 3), np.array([0.8, 1.3, 5.0, 20.0]), truth)
    top_wrong = _wml_sweep_row((0.3, 0.7, 3), np.array([0.0, 0.5, 5.0, 18.4]), truth)
    assert low_end_wrong["mae_ml"] == pytest.approx(0.4) == top_wrong["mae_ml"]
    assert low_end_wrong["mae_lt1_ml"] == pytest.approx(0.8) and top_wrong["mae_lt1_ml"] == 0.0
    assert low_end_wrong["target_score"] == pytest.approx(0.4 / 1.0 + 0.8 / 0.5)
    assert top_wrong["target_score"] < low_end_wrong["target_score"]
    assert np.isnan(_wml_sweep_row((0.1, 0.0, 0), np.array([4.0]), np.array([5.0]))["target_score"])


def test_the_gate_withholds_a_count_when_the_candidate_stage_sees_almost_nothing():
    """Veins alone give every brain SWI dozens of dark-blob candidates; an image with almost none is one whose
    contrast the candidate stage cannot read, and its count (0: grade 0) must not be reported as a measurement."""
    from svdmark.measure import quality

    limits = {"candidates_per_ml": {"min": 0.03, "max": 1.5}}
    assert quality.judge({"candidates_per_ml": 0.2}, limits).measurable
    low = quality.judge({"candidates_per_ml": 0.0}, limits)
    assert not low.measurable and "below the model's floor" in low.reasons[0]
    high = quality.judge({"candidates_per_ml": 2.0}, limits)
    assert not high.measurable and "above the model's limit" in high.reasons[0]



def test_every_gate_score_has_a_results_column():
    """``quality.SCORES`` (a results table's quality columns) names every score the gate computes."""
    from svdmark.measure import quality

    vol = tilted_volume((4, 32, 32), array=np.full((4, 32, 32), 30.0, np.float32))
    scored = set(quality.ct_scores(vol)) | set(quality.swi_scores(vol, 30.0)) | {"tta_spread", "candidates_per_ml"}
    assert scored <= set(quality.SCORES)
    assert set(quality.DESCRIPTIONS) == set(quality.SCORES)  # and the data dictionary a unit and meaning for each


def test_the_data_dictionary_gives_each_quality_column_its_unit():
    """One table holds CT and SWI rows: the noise column is in HU on one and a fraction on the other."""
    import pandas as pd

    from svdmark.batch.dictionary import describe

    cols = {f"quality_{s}": [1.0] for s in ("noise", "tissue_level", "candidates_per_ml", "coverage_mm")}
    entries = {e["name"]: e for e in describe(pd.DataFrame(cols))}
    assert entries["quality_noise"]["unit"] == "HU on wml rows; fraction of the tissue level on cmb rows"
    assert entries["quality_tissue_level"]["unit"] == "HU"
    assert entries["quality_candidates_per_ml"]["unit"] == "per mL of head"
    assert entries["quality_coverage_mm"]["unit"] == "mm"
