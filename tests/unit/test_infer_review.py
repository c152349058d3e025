"""Where a review of the inference and measurement found the product wrong: a candidate density that could not
exceed its limit, the SWI slice gate, the CMB self-test's positions, and pre-release model versions."""
from __future__ import annotations

import dataclasses
import glob

import numpy as np
import pytest

from svdmark.domain import Task
from svdmark.infer import ModelRegistry, reference
from svdmark.infer import preprocess as pp
from svdmark.infer.runtime import Candidate, ModelOutput
from svdmark.measure import from_output


def _reference_swi():
    return reference.load(sorted(glob.glob("service/svdmark/data/models/cmb-swi/references/*.npz"))[0])[0].volume


def test_an_image_full_of_dark_blob_artefacts_is_withheld_though_the_candidate_stage_passes_on_its_cap():
    """The gate scored the candidates passed on (at most ``max_candidates``: at most 0.96 per mL on an adult head,
    under the 1.66 limit), so it could never fire; it scores all the stage found."""
    spec = ModelRegistry().active(Task.CMB)
    v = _reference_swi()
    cspec, norm_spec = dict(spec.manifest.candidates), spec.manifest.input.normalisation
    ref = pp.foreground_reference(v.array, norm_spec)
    a = v.array.copy()
    dots = np.zeros(a.shape, bool)
    dots[::2, ::5, ::5] = True  # thousands of dark one-voxel artefacts through the brain
    a[dots & (a > 0.6 * ref) & (a < 1.4 * ref)] = 0.1 * ref
    art = dataclasses.replace(v, array=a)
    _, cents, resp, _, r, found = pp.cmb_candidates(art, cspec, norm_spec, 2)
    assert len(cents) == cspec["max_candidates"] < found
    _, all_cents, all_resp, *_ = pp.cmb_candidates(art, dict(cspec, max_candidates=10**6), norm_spec, 2)
    assert len(all_cents) == found and np.array_equal(all_cents[:len(cents)], cents)  # the strongest, unchanged
    out = ModelOutput(Task.CMB, spec.sha256, "cpu", 0.0,
                      candidates=tuple(Candidate(tuple(map(float, c)), 0.0, 3.0, float(q))
                                       for c, q in zip(cents, resp)),
                      extras={"n_candidates": len(cents), "n_candidates_found": found, "reference_intensity": r})
    assert spec.manifest.candidate_count == "found"
    f = from_output(spec, art, out)
    assert f.quality is not None and not f.quality.measurable
    assert any("dark-blob candidates per mL" in reason for reason in f.quality.reasons), f.quality.reasons
    assert f.quality.scores["candidates_per_ml"] > 1.5 * spec.manifest.quality_limits["candidates_per_ml"]["max"]
    # a manifest from before (its limit set on the candidates passed on) is read as it was calibrated
    older = ModelRegistry().get("cmb-swi", "1.10.3")
    assert older.manifest.candidate_count == "passed"
    scored = from_output(older, art, out).quality.scores["candidates_per_ml"]
    assert scored == pytest.approx(len(cents) / (found / f.quality.scores["candidates_per_ml"]), rel=0.01)


def test_a_thick_swi_reconstructed_with_overlap_is_not_measurable():
    """GE SWAN ZIP2 and half-spacing reconstructions: 5.6 mm slices every 2.8 mm lose small bleeds as 5.6 mm
    slices do; the gate scored the spacing alone."""
    from svdmark.measure import quality

    from .test_measure import tilted_volume

    limits = ModelRegistry().active(Task.CMB).manifest.quality_limits
    vol = tilted_volume((50, 32, 32), pixel=1.0, spacing=2.8, tilt_deg=0.0, array=np.full((50, 32, 32), 100.0,
                                                                                           np.float32))
    thick = quality.swi_scores(dataclasses.replace(vol, slice_thickness=5.6), 100.0)["slice_mm"]
    verdict = quality.judge({"slice_mm": thick}, {"slice_mm": limits["slice_mm"]})
    assert thick == 5.6 and not verdict.measurable
    assert verdict.reasons == ("slice thickness or spacing 5.6 mm is above the model's limit of 3.0 mm",)
    assert quality.swi_scores(dataclasses.replace(vol, slice_thickness=2.0), 100.0)["slice_mm"] == 2.8


def test_a_model_that_reports_as_many_bleeds_as_there_are_but_elsewhere_fails_its_self_test(monkeypatch):
    """Coordinates in the wrong frame, or a model that calls veins: the count matched the truth's and passed."""
    import svdmark.measure as measure
    from svdmark.domain import CmbFindings, Microbleed
    from svdmark.infer import self_test

    class _NoModel:
        def run(self, model, volume):
            return ModelOutput(Task.CMB, model.sha256, "cpu", 0.0)

    spec = ModelRegistry().active(Task.CMB)
    st = spec.manifest.self_test
    cases = reference.load(reference.locate(spec.path.parent, st.reference, st.reference_sha256))
    truths = {id(c.volume.array): c.bleeds_mm for c in cases}
    shift = {"z": 300.0}

    def findings(model, volume, output):
        return CmbFindings(tuple(Microbleed((float(x), float(y), float(z) + shift["z"]), 4.0, 0.99)
                                 for x, y, z in truths[id(volume.array)]), np.zeros(volume.shape, np.uint8))

    monkeypatch.setattr(reference, "load", lambda path: cases)  # the volumes the fake recognises
    monkeypatch.setattr(measure, "from_output", findings)
    res = self_test(spec, _NoModel())
    assert res.measured == res.truth and res.found == 0 and not res.passed
    assert f"0 of {res.truth:.0f} bleeds found where they are" in res.describe()
    shift["z"] = 1.0  # within the 5 mm match: the same findings where the bleeds are pass
    res = self_test(spec, _NoModel())
    assert res.found == res.truth and res.passed, res.describe()


def test_a_release_candidate_sorts_below_its_release():
    from svdmark.infer.registry import version_key

    assert sorted(["1.2.0-rc10", "1.2.0", "1.2.0-rc2", "1.10.0", "1.9.1"], key=version_key) == [
        "1.2.0-rc2", "1.2.0-rc10", "1.2.0", "1.9.1", "1.10.0"]


def test_a_manifest_names_what_its_density_limit_counts():
    from svdmark.domain import Manifest, ManifestFieldError

    assert Manifest.from_json({}).candidate_count == "passed"  # every manifest from before the field
    assert Manifest.from_json({"quality": {"candidate_count": "found"}}).candidate_count == "found"
    with pytest.raises(ManifestFieldError, match="candidate_count"):
        Manifest.from_json({"quality": {"candidate_count": "all"}})
