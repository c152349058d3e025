"""The anatomical frame (svdmark.measure.frame): the cavity fit recovers a known affine, places the pineal of a head
built by another generator (devset), and the manifest's mimic sites exclude what lies there and nothing else."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from svdmark.domain import ManifestFieldError, OutputSpec, Volume
from svdmark.measure import frame


def _volume(array: np.ndarray, spacing: float, origin) -> Volume:
    positions = np.array([[origin[0], origin[1], origin[2] + k * spacing] for k in range(array.shape[0])])
    return Volume(array=array.astype(np.float32), row_direction=(1.0, 0.0, 0.0), column_direction=(0.0, 1.0, 0.0),
                  pixel_spacing=(spacing, spacing), positions=positions, frames=(), frame_of_reference_uid="2.25.1",
                  slice_thickness=spacing)


def _template_head(matrix: np.ndarray, offset: np.ndarray, spacing: float = 2.0) -> Volume:
    """An SWI-like head drawn from the template cavity through a known patient -> template map: brain 1.0, a dark
    4 mm skull, a 5 mm scalp at 0.6."""
    tpl = frame.template()
    n = (80, 96, 80)
    origin = np.array([-80.0, -96.0, -70.0])
    k, i, j = np.mgrid[0:n[0], 0:n[1], 0:n[2]]
    xyz = np.stack([j * spacing, i * spacing, k * spacing], -1).reshape(-1, 3) + origin
    lps = xyz @ matrix.T + offset
    inside = (tpl.sample(tpl.cavity, lps) > 0.5).reshape(n)
    dist = ndimage.distance_transform_edt(~inside, sampling=spacing)
    img = np.where(inside, 1.0, np.where((dist > 4) & (dist <= 9), 0.6, 0.02))
    return _volume(img, spacing, origin)


def test_fit_recovers_a_known_affine():
    rot = Rotation.from_euler("xyz", [6.0, -4.0, 8.0], degrees=True).as_matrix()
    matrix = np.diag([1.08, 0.93, 1.02]) @ rot
    offset = np.array([4.0, -7.0, 12.0])
    vol = _template_head(matrix, offset)
    fit = frame.fit_frame(vol)
    assert fit is not None
    for centres in frame.SITES.values():
        for ras in centres:
            true_xyz = np.linalg.solve(matrix, np.asarray(ras) * frame.RAS_LPS - offset)
            got = fit.to_template(true_xyz)[0]
            assert np.linalg.norm(got - ras) < 3.0, (ras, got)


def test_thin_slab_no_frame_and_nothing_excluded():
    thin = _template_head(np.eye(3), np.zeros(3))
    vol = replace(thin, array=thin.array[30:60], positions=thin.positions[30:60])  # 58 mm of the head
    assert frame.fit_frame(_volume(np.zeros((20, 32, 32)), 2.0, (0.0, 0.0, 0.0))) is None  # no head at all
    cands = [((10.0, 16.0, 16.0), 0.999, 2.0)]
    assert frame.fit_frame(vol) is None
    assert frame.outside_mimic_sites(vol, cands, {"pineal": (5.0, 9.0, 8.0)}) == cands


def test_an_implausible_fit_is_refused():
    squashed = np.diag([1.0, 1.0, 0.45])  # a head half the template's height: outside the scale range
    assert frame.fit_frame(_template_head(squashed, np.zeros(3))) is None


@pytest.fixture(scope="module")
def devset_head(tmp_path_factory):
    """A devset SWI head (another generator's anatomy) with a pineal calcification in its truth."""
    from devset import build_swi
    from training.devcases import read_series

    out = tmp_path_factory.mktemp("frame")
    for i in range(6):  # seeds far above the development halves' (the next fresh half starts at SEED_BASE + 420)
        seed = build_swi.SEED_BASE + 9000 + i
        build_swi.build_case(seed, out)  # a whole head: the small cases' 40-55 mm slabs are too thin to fit
        truth, vol = read_series(out / f"cmb_{seed}", "cmb")
        if any(m.get("site") == "pineal" for m in truth["mimics"]) and truth["microbleeds"]:
            return truth, vol
    pytest.fail("no devset head with a pineal calcification and bleeds in 6 seeds")


@pytest.mark.slow
def test_devset_pineal_lies_at_the_template_pineal(devset_head):
    truth, vol = devset_head
    fit = frame.fit_frame(vol)
    assert fit is not None
    pineal = next(m["center_mm"] for m in truth["mimics"] if m.get("site") == "pineal")
    # the development set's pineal calcifications lie a median 4.4 mm (90th percentile 6.3) from the template's
    assert np.linalg.norm(fit.to_template(pineal)[0] - frame.SITES["pineal"][0]) < 9.0


@pytest.mark.slow
def test_mimic_sites_exclude_the_calcification_not_the_bleeds(devset_head):
    from svdmark.infer.preprocess import patient_to_index

    truth, vol = devset_head
    pineal = next(m["center_mm"] for m in truth["mimics"] if m.get("site") == "pineal")
    bleeds = [b["center_mm"] for b in truth["microbleeds"]]
    cands = [(tuple(patient_to_index(vol, np.asarray(c, float))), 0.999, 3.0) for c in [pineal, *bleeds]]
    kept = frame.outside_mimic_sites(vol, cands, {"pineal": (5.0, 9.0, 8.0), "choroid plexus glomus": (9.0, 10.0, 9.0)})
    assert cands[0] not in kept
    assert len(kept) >= 0.9 * len(bleeds)


def test_manifest_mimic_sites_are_checked():
    spec = OutputSpec.from_json({"threshold": 0.9, "mimic_sites": {"pineal": [5, 9, 8]}})
    assert spec.mimic_sites == {"pineal": (5.0, 9.0, 8.0)}
    assert OutputSpec.from_json({}).mimic_sites == {}
    for bad in ({"pinael": [5, 9, 8]}, {"pineal": [5, 9]}, {"pineal": [5, 0, 8]}, {"pineal": "big"}, [1, 2, 3],
                {"pineal": "798"}, {"pineal": [5, float("nan"), 8]}, {"pineal": [5, float("inf"), 8]},
                {"pineal": [True, 9, 8]}, [], ""):
        with pytest.raises(ManifestFieldError, match="mimic_sites"):
            OutputSpec.from_json({"mimic_sites": bad})
    json.dumps({"pineal": list(spec.mimic_sites["pineal"])})


@pytest.mark.slow
def test_the_findings_say_what_the_sites_kept_out_of_the_count(devset_head):
    from pathlib import Path

    from svdmark.domain import ModelSpec, Task
    from svdmark.infer.preprocess import patient_to_index
    from svdmark.infer.runtime import Candidate, ModelOutput
    from svdmark.measure import from_output

    truth, vol = devset_head
    pineal = next(m["center_mm"] for m in truth["mimics"] if m.get("site") == "pineal")
    bleed = truth["microbleeds"][0]["center_mm"]
    out = ModelOutput(Task.CMB, "0" * 64, "cpu", 0.0, extras={}, candidates=tuple(
        Candidate(tuple(float(v) for v in patient_to_index(vol, np.asarray(c, float))), 0.999, 3.0)
        for c in (pineal, bleed)))

    def spec(sites):
        return ModelSpec("cmb-test", "1.0.0", Task.CMB, "0" * 64, Path("model.onnx"), {
            "name": "cmb-test", "version": "1.0.0", "task": "cmb", "sha256": "0" * 64,
            "input": {"kind": "patch3d", "normalisation": {"type": "foreground_median"}},
            "output": {"threshold": 0.5, "merge_mm": 1.5, "mimic_sites": sites}})

    plain = from_output(spec({}), vol, out)
    assert plain.count == 2 and not plain.warnings
    f = from_output(spec({"pineal": [7, 9, 8]}), vol, out)
    assert f.count == 1
    assert f.warnings == ("1 dark focus at the pineal gland or a choroid plexus glomus, where calcification is usual, "
                          "not counted as microbleed",)


def test_the_manifest_knows_the_sites_the_frame_places():
    from svdmark.domain import MIMIC_SITES

    assert set(MIMIC_SITES) == set(frame.SITES)


def test_a_grid_too_coarse_or_too_small_gives_no_frame():
    assert frame.fit_frame(_volume(np.ones((40, 16, 16)), 12.0, (0.0, 0.0, 0.0))) is None  # uniform, 12 mm voxels
    tiny = _volume(np.ones((120, 8, 8)), 1.0, (0.0, 0.0, 0.0))
    assert frame.fit_frame(replace(tiny, pixel_spacing=(0.01, 0.01))) is None  # smaller than one 2 mm block

