"""The microbleed count's interval: thresholds plus a calibrated margin (``measure.uncertainty``), and the intervals'
calibration (``training.calibrate``), which must round exactly as the runtime does."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from svdmark.measure.uncertainty import cmb_interval, count_bounds

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training.calibrate import cmb_uncertainty  # noqa: E402

COUNTS = {0.3: 14, 0.9: 11, 0.995: 10, 0.999: 8}


def test_without_a_margin_the_interval_is_the_counts_at_the_two_thresholds():
    spec = {"threshold_low": 0.3, "threshold_high": 0.999}
    iv = cmb_interval(COUNTS.get, 10, spec)
    assert (iv.low, iv.high) == (8.0, 14.0) and "±" not in iv.method
    assert cmb_interval(COUNTS.get, 10, None) is None


def test_the_margin_widens_both_ends_outwards_to_whole_bleeds():
    spec = {"threshold_low": 0.3, "threshold_high": 0.999, "a": 1.5, "b": 0.25}  # h = 1.5 + 2.5 = 4
    iv = cmb_interval(COUNTS.get, 10, spec)
    assert (iv.low, iv.high) == (4.0, 18.0) and "± (1.5 + 0.25 × count)" in iv.method
    assert count_bounds(10, 8, 14, 1.0, 0.05) == (6, 16)  # h = 1.5: floor(6.5), ceil(15.5)
    assert count_bounds(1, 1, 2, 3.0, 0.0) == (0, 5)  # never below 0
    lo, hi = count_bounds(np.array([10, 1]), np.array([8, 1]), np.array([14, 2]), 1.0, 0.05)
    assert list(lo) == [6, 0] and list(hi) == [16, 4]


def _rows(truth, counts):
    """Evaluation rows as training.evaluate writes them: the truth and the count at each threshold."""
    return [{"n_truth": t, "count": c[0.995], "counts_at": {str(k): v for k, v in c.items()}}
            for t, c in zip(truth, counts)]


def test_calibration_picks_the_narrowest_margin_that_covers_and_rounds_as_the_runtime():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 60, 200)
    counts = []
    for t in truth:  # misses grow with the burden; a few false findings in every head
        found = int(rng.binomial(t, 0.85)) + int(rng.poisson(1.5))
        counts.append({0.3: found + int(rng.poisson(2)), 0.995: found, 0.999: max(0, found - int(rng.poisson(1)))})
    unc = cmb_uncertainty(_rows(truth, counts), 0.9, 0.995)
    assert unc["b"] > 0  # the misses are proportional to the count: a width that grows with it is narrower
    lo, hi = [], []
    for c in counts:
        iv = cmb_interval(lambda t, c=c: c[t], c[0.995], unc)
        lo.append(iv.low)
        hi.append(iv.high)
    covered = np.mean((np.array(lo) <= truth) & (truth <= np.array(hi)))
    assert covered == pytest.approx(unc["validation_coverage"], abs=1e-3) and covered >= 0.9
    assert np.mean(np.array(hi) - np.array(lo)) == pytest.approx(unc["validation_mean_width"], abs=0.01)
    # a margin-free band from the thresholds alone does not reach 0.9 here
    bare = [count_bounds(c[0.995], c[0.999], c[0.3]) for c in counts]
    assert np.mean([a <= t <= b for (a, b), t in zip(bare, truth)]) < 0.9


def test_calibration_picks_only_thresholds_every_pooled_evaluation_counted_at():
    """An evaluation written before the threshold grid grew has no count at the new thresholds: the pool's
    calibration picks among the thresholds all its rows have, and naming a missing one stops with a clear message."""
    from training.calibrate import _key

    old = _rows([10, 3], [{0.3: 14, 0.995: 10}, {0.3: 5, 0.995: 3}])
    new = _rows([12, 0], [{0.3: 16, 0.995: 11, 0.999: 9}, {0.3: 2, 0.995: 1, 0.999: 0}])
    unc = cmb_uncertainty(new + old, 0.9, 0.995)  # the first row has a count at 0.999, the last two do not
    assert (unc["threshold_low"], unc["threshold_high"]) in {(0.3, 0.995), (0.995, 0.995)}
    assert cmb_uncertainty(new, 0.9, 0.995)["threshold_high"] in (0.995, 0.999)
    with pytest.raises(SystemExit, match="no count at threshold 0.999"):
        _key(old[0], 0.999)


def test_calibration_scores_unscored_rows_as_the_runtime_gate_does(monkeypatch):
    """Rows from an evaluation without a gate are scored on the slabs the model reads, with the manifest's CT noise
    residual, as ``svdmark.measure.from_output`` scores them."""
    from types import SimpleNamespace

    from scipy import ndimage

    from svdmark.domain import InputSpec
    from svdmark.measure import quality
    from tests.unit.test_measure import tilted_volume
    from training import calibrate, data

    noise = ndimage.gaussian_filter(np.random.default_rng(2).standard_normal((40, 64, 64)) * 6, (0, 1.0, 1.0))
    vol = tilted_volume((40, 64, 64), spacing=0.625, tilt_deg=0.0, array=np.round(30 + noise).astype(np.float32))
    monkeypatch.setattr(data, "ncct_case", lambda seed: SimpleNamespace(volume=vol))
    inp = InputSpec.from_json({"kind": "slice2d", "normalisation": {"type": "hu_window"}, "min_slice_mm": 2.5})
    rows = [{"seed": 1, "model": 2.0, "passes": [2.0, 3.0]}]
    calibrate.gate_scores(rows, "wml", inp, "neighbour_mean")
    want = {**quality.ct_scores(vol, 4, "neighbour_mean"), "tta_spread": quality.tta_spread([2.0, 3.0], 2.0)}
    assert rows[0]["scores"] == want
    assert rows[0]["scores"]["noise"] != quality.ct_scores(vol)["noise"]  # not the whole stack's median residual


def test_the_degradation_study_scores_noise_as_the_runtime_gate_does(monkeypatch):
    """``training.degrade`` sets the noise limit from the scores it records, so it scores them with the manifest's
    CT noise residual on the slabs the model reads, as ``svdmark.measure.from_output`` does."""
    from types import SimpleNamespace

    from scipy import ndimage

    from svdmark.infer import ModelRegistry
    from svdmark.infer.registry import default_models_dir
    from svdmark.measure import quality
    from tests.unit.test_measure import tilted_volume
    from training import data, degrade

    noise = ndimage.gaussian_filter(np.random.default_rng(3).standard_normal((40, 64, 64)) * 6, (0, 1.0, 1.0))
    vol = tilted_volume((40, 64, 64), spacing=0.625, tilt_deg=0.0, array=np.round(30 + noise).astype(np.float32))
    monkeypatch.setattr(data, "ncct_case", lambda seed: SimpleNamespace(volume=vol, truth_ml=0.0))
    spec = ModelRegistry(default_models_dir()).get("wml-ncct", "1.12.5")
    assert spec.manifest.noise_score == "neighbour_mean"
    runtime = SimpleNamespace(run=lambda spec, v: SimpleNamespace(fraction=np.zeros(v.array.shape, np.float32),
                                                                   passes=[]))
    rows = degrade.study_wml(spec, runtime, [1], [0.0], np.random.default_rng(0))
    assert rows[0]["noise"] == quality.ct_scores(vol, 4, "neighbour_mean")["noise"]
    assert rows[0]["noise"] != quality.ct_scores(vol, 4)["noise"]  # not the median residual


def test_development_evaluations_are_pooled_into_the_interval_but_not_into_the_gate(tmp_path):
    """``training.calibrate --interval-eval``: the interval sees every pooled head; the gate's limits only the
    validation run's."""
    import json

    from training.calibrate import main

    def wml_rows(truths, err, noise):
        return [{"seed": i, "truth": t, "model": t + err, "passes": [t + err], "scores": {
            "coverage_mm": 120.0, "noise": noise, "tissue_level": 30.0, "tta_spread": 0.1}}
            for i, t in enumerate(truths)]

    val = {"split": "val,val_atlas", "n": 10, "cases": wml_rows(np.linspace(0, 20, 10), 0.5, 4.0)}
    dev = {"split": "dev", "data": "/work/dev_data/choose", "n": 10,
           "cases": wml_rows(np.linspace(0, 20, 10), -6.0, 40.0)}  # reads 6 mL low, and far noisier
    (tmp_path / "val.json").write_text(json.dumps(val))
    (tmp_path / "dev.json").write_text(json.dumps(dev))
    man = tmp_path / "manifest.json"
    man.write_text(json.dumps({"name": "wml-test", "output": {}}))
    main(["--task", "wml", "--eval", str(tmp_path / "val.json"), "--manifest", str(man)])
    alone = json.loads(man.read_text())
    main(["--task", "wml", "--eval", str(tmp_path / "val.json"), "--manifest", str(man),
          "--interval-eval", str(tmp_path / "dev.json")])
    pooled = json.loads(man.read_text())
    assert alone["uncertainty"]["wml"]["n"] == 10 and pooled["uncertainty"]["wml"]["n"] == 20
    assert pooled["uncertainty"]["wml"]["chosen_on"].startswith("val,val_atlas (n=10) + dev choose (n=10)")
    assert pooled["uncertainty"]["wml"]["validation_mean_width_ml"] > alone["uncertainty"]["wml"][
        "validation_mean_width_ml"] + 8  # 6 mL low in half the heads: the band must reach them
    assert pooled["quality"] == alone["quality"]  # the dev heads' noise did not move the gate
    with pytest.raises(SystemExit, match="never"):
        reported = {**dev, "split": "heldout"}
        (tmp_path / "rep.json").write_text(json.dumps(reported))
        main(["--task", "wml", "--eval", str(tmp_path / "val.json"), "--manifest", str(man),
              "--interval-eval", str(tmp_path / "rep.json")])
