"""training.devcases / evaluate --set dev: the independent development set is read through the service's stages,
and the stress set can never be chosen on."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/ and devset/

from training import devcases, evaluate  # noqa: E402


def _fake_case(root: Path, name: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "truth.json").write_text(json.dumps({"seed": int(name.split("_")[1])}))


def test_a_stress_case_is_refused_by_name(tmp_path):
    _fake_case(tmp_path, "wml_7330000")
    _fake_case(tmp_path, "wml_7310004")  # a stress case copied in
    with pytest.raises(SystemExit, match=r"wml_7310004.*reporting only"):
        devcases.dev_case_dirs(tmp_path)


def test_a_folder_without_cases_says_how_to_build_them(tmp_path):
    with pytest.raises(SystemExit, match="devset.build"):
        devcases.dev_case_dirs(tmp_path)


def test_cases_come_in_seed_order_and_n_takes_the_first(tmp_path):
    for i in (2, 0, 1):
        _fake_case(tmp_path, f"wml_{7330000 + i}")
    assert [p.name for p in devcases.dev_case_dirs(tmp_path, 2)] == ["wml_7330000", "wml_7330001"]


def test_evaluate_needs_the_folder_and_one_task(tmp_path):
    with pytest.raises(SystemExit, match="--data.*devset.build"):
        list(evaluate.wml_cases("dev", 1))
    with pytest.raises(SystemExit, match="--data.*devset.build_swi"):
        list(evaluate.cmb_cases("dev", 1))
    with pytest.raises(SystemExit, match="--task wml or --task cmb"):
        evaluate.main(["--set", "dev", "--data", str(tmp_path), "--task", "both"])


def test_a_case_of_the_other_task_is_refused(tmp_path):
    _fake_case(tmp_path, "cmb_7335000")
    _fake_case(tmp_path, "wml_7330000")
    with pytest.raises(SystemExit, match=r"wml_7330000.*not development-set cmb cases"):
        devcases.dev_case_dirs(tmp_path, task="cmb")
    with pytest.raises(SystemExit, match="devset.build_swi"):
        devcases.dev_case_dirs(tmp_path / "none", task="cmb")


def test_a_development_case_loads_with_its_truth_in_slice_order(tmp_path):
    build = pytest.importorskip("devset.build")
    seed = 7330000
    while True:  # the first seed with a lesion, so the truth has something to line up
        truth = build.build_case(seed, tmp_path, small=True)
        if truth["wml_ml"] > 0:
            break
        seed += 1
    [case_dir] = [p for p in devcases.dev_case_dirs(tmp_path) if p.name == f"wml_{seed}"]
    case = devcases.read_ncct_case(case_dir)
    assert case.seed == seed and case.truth_fraction.shape == case.volume.shape
    assert case.contrast_hu == pytest.approx(truth["lesion"]["contrast_hu"]) and case.params["generator"] == "devset-1"
    ml = float(case.truth_fraction.sum(dtype=np.float64)) * case.volume.voxel_volume_mm3 / 1000.0
    assert ml == pytest.approx(truth["wml_ml"], rel=0.01)
    # slice order: the loaded volume is sorted along the slice normal, the truth moved with it through the UIDs
    with np.load(case_dir / "truth.npz") as z:
        written = z["fraction"].astype(np.float32)
    k_of = {u: k for k, u in enumerate(truth["sop_uids"])}
    for k, frame in enumerate(case.volume.frames):
        assert np.array_equal(case.truth_fraction[k], written[k_of[frame.sop_instance_uid]])


def test_evaluate_scores_the_shipped_model_on_development_cases(tmp_path):
    build = pytest.importorskip("devset.build")
    from svdmark.infer import ModelRegistry, Runtime

    for seed in (7330000, 7330001):
        build.build_case(seed, tmp_path, small=True)
    res = evaluate.eval_wml("dev", 2, Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=1),
                            ModelRegistry(None), sweep=True, baseline=False, data_dir=tmp_path)
    assert [r["seed"] for r in res["cases"]] == [7330000, 7330001] and res["split"] == "dev"
    truths = [json.loads((tmp_path / f"wml_{s}" / "truth.json").read_text())["wml_ml"] for s in (7330000, 7330001)]
    assert [r["truth"] for r in res["cases"]] == pytest.approx(truths)
    assert all(np.isfinite(r["model"]) for r in res["cases"]) and res["sweep"]


def test_development_and_stress_cases_are_never_trained_on(tmp_path):
    _fake_case(tmp_path, "wml_7340000")
    assert [p.name for p in devcases.foreign_case_dirs(tmp_path)] == ["wml_7340000"]
    for name in ("wml_7330031", "wml_7310002"):
        _fake_case(tmp_path, name)
        with pytest.raises(SystemExit, match="never trained on"):
            devcases.foreign_case_dirs(tmp_path)
        (tmp_path / name / "truth.json").unlink()


def test_evaluate_reads_training_heads_only_as_extra_and_only_for_wml(tmp_path):
    _fake_case(tmp_path, "wml_7340000")
    with pytest.raises(SystemExit, match="not development-set wml cases"):  # heads trained on are no development set
        list(evaluate.wml_cases("dev", 1, tmp_path))
    with pytest.raises(SystemExit, match="--task wml"):
        list(evaluate.cmb_cases("extra", 1, tmp_path))
    _fake_case(tmp_path, "wml_7330000")  # nor does a development case pass as a training head
    with pytest.raises(SystemExit, match="never trained on"):
        list(evaluate.wml_cases("extra", 1, tmp_path))


def test_visibility_auc_tells_separable_from_invisible():
    from training import visibility

    rng = np.random.default_rng(1)
    normal = rng.normal(25.0, 3.0, 5000)
    assert visibility._auc(normal, normal - 30.0) == pytest.approx(1.0)
    assert visibility._auc(normal, rng.normal(25.0, 3.0, 5000)) == pytest.approx(0.5, abs=0.03)
    assert visibility._auc(normal, normal + 30.0) == pytest.approx(0.0)


def test_the_visible_lesion_reader_scores_what_the_image_shows_against_the_truth():
    from training import visibility

    rows = [{"truth_ml": t, "visible_ml": v} for t, v in ((0.0, 0.0), (0.5, 0.25), (4.0, 2.0), (20.0, 10.0))]
    o = visibility.oracle(rows)
    assert o["as_seen"]["mae_ml"] == pytest.approx((0.25 + 2.0 + 10.0) / 4)
    assert o["as_seen"]["mae_lt1_ml"] == pytest.approx(0.125) and o["as_seen"]["pearson_r"] == pytest.approx(1.0)
    assert o["best_factor"] == pytest.approx(2.0) and o["scaled"]["mae_ml"] == pytest.approx(0.0, abs=1e-9)


def test_visibility_of_a_development_case(tmp_path):
    build = pytest.importorskip("devset.build")
    from training import visibility

    seed = 7330000
    while build.build_case(seed, tmp_path, small=True)["wml_ml"] < 1.0:  # a case with a lesion core to measure
        seed += 1
    r = visibility.case_visibility(tmp_path / f"wml_{seed}")
    assert r["seed"] == seed and 0.0 <= r["visible_ml"] <= r["truth_ml"] + 1e-6
    assert r["wm_sd_hu"] > 0 and (r["auc"] is None or 0.0 <= r["auc"] <= 1.0)


def test_the_probes_read_training_heads_only_through_extra(tmp_path):
    import argparse

    from training import visibility

    ap = argparse.ArgumentParser()
    visibility.add_source_arguments(ap)
    ap.add_argument("--n", type=int, default=None)
    _fake_case(tmp_path, "wml_7340000")
    args = ap.parse_args(["--extra", str(tmp_path)])
    assert [p.name for p in visibility.source_folders(args)] == ["wml_7340000"]
    assert visibility.source_name(args, 1) == tmp_path.name
    with pytest.raises(SystemExit, match="not development-set wml cases"):
        visibility.source_folders(ap.parse_args(["--data", str(tmp_path)]))
    _fake_case(tmp_path, "wml_7330000")
    with pytest.raises(SystemExit, match="never trained on"):
        visibility.source_folders(args)


def test_an_swi_development_case_loads_with_its_bleeds(tmp_path):
    build_swi = pytest.importorskip("devset.build_swi")

    seed = next(build_swi.SEED_BASE + i for i in range(200)
                if build_swi.plan(build_swi.SEED_BASE + i, small=True)["count"] > 0)  # bleeds to line up
    truth = build_swi.build_case(seed, tmp_path, small=True)
    [case_dir] = devcases.dev_case_dirs(tmp_path, task="cmb")
    case = devcases.read_swi_case(case_dir)
    assert case.seed == seed and len(case.bleeds) == truth["count"] > 0
    # each centre lies inside the loaded volume's grid, where serve's detector would look for it
    vol = case.volume
    axes = np.column_stack([vol.slice_step, vol.pixel_spacing[0] * np.asarray(vol.column_direction),
                            vol.pixel_spacing[1] * np.asarray(vol.row_direction)])
    for b, written in zip(case.bleeds, truth["microbleeds"]):
        assert b["center_mm"] == pytest.approx(written["center_mm"]) and b["diameter_mm"] == written["diameter_mm"]
        kij = np.linalg.solve(axes, np.asarray(b["center_mm"]) - vol.positions[0])
        assert np.all(kij > -0.5) and np.all(kij < np.array(vol.shape) - 0.5)
    with pytest.raises(ValueError, match="not wml"):
        devcases.read_ncct_case(case_dir)


def test_visibility_tells_a_visible_lesion_from_one_under_the_noise():
    """The core figures on a drawn head: a 10 HU lesion under 2 HU noise is visible, a 1 HU one under 8 HU is not."""
    from types import SimpleNamespace

    from training import visibility

    rng = np.random.default_rng(3)
    fraction = np.zeros((6, 64, 64), np.float32)
    fraction[:, 20:36, 20:36] = 1.0
    normal = fraction == 0
    figures = {}
    for contrast, sd in ((10.0, 2.0), (1.0, 8.0)):
        hu = 28.0 - contrast * fraction + rng.normal(0.0, sd, fraction.shape).astype(np.float32)
        vol = SimpleNamespace(array=hu, pixel_spacing=(1.0, 1.0), voxel_volume_mm3=5.0)
        figures[contrast] = visibility.visibility(vol, fraction, normal)
    seen, hidden = figures[10.0], figures[1.0]
    assert seen["contrast_hu"] == pytest.approx(10.0, abs=0.3) and seen["auc"] > 0.99 and seen["cnr"] > 4
    assert seen["visible_ml"] > 0.9 * fraction.sum() * 5.0 / 1000.0
    assert hidden["auc"] < 0.75 and hidden["cnr"] < 0.3 and hidden["visible_ml"] < seen["visible_ml"] / 2
    assert seen["wm_hu"] == pytest.approx(28.0, abs=0.2)


def test_dark_wm_puts_a_halo_in_the_shell_next_to_the_ventricle_and_follows_a_reader():
    """A drawn head: a CSF block, a labelled 6 HU halo 0-3 mm from it, unlabelled 2 HU darkening at 3-6 mm."""
    from training import dark_wm

    rng = np.random.default_rng(5)
    hu = np.full((8, 96, 96), 28.0, np.float32)
    hu[:, 40:56, 40:56] = 5.0  # the ventricle
    fraction = np.zeros(hu.shape, np.float32)
    fraction[:, 38:58, 38:58] = 1.0  # a 2 mm halo round it
    fraction[:, 40:56, 40:56] = 0.0
    hu[fraction > 0] -= 6.0
    ring = np.zeros(hu.shape, bool)
    ring[:, 35:61, 35:61] = True
    ring[:, 38:58, 38:58] = False
    hu[ring] -= 2.0
    hu += rng.normal(0.0, 1.0, hu.shape).astype(np.float32)
    wm = np.where((hu > 15.0) | (fraction > 0), 1.0, 0.0).astype(np.float32)
    read = fraction > 0  # a reader that marks exactly the labelled halo
    shells, darkness = dark_wm.shells(hu, fraction, wm, (1.0, 1.0, 1.0), read)
    by = {r["shell"]: r for r in shells}
    assert by["0-3 mm"]["lesion_ml"] == pytest.approx(float(fraction.sum()) / 1000.0)
    assert by["0-3 mm"]["lesion_below_hu"] == pytest.approx(6.0, abs=0.5)
    assert by["3-6 mm"]["lesion_ml"] == 0.0 and by["3-6 mm"]["normal_below_hu"] == pytest.approx(2.0, abs=0.5)
    assert by["> 10 mm"]["normal_below_hu"] == pytest.approx(0.0, abs=0.1)
    assert by["0-3 mm"]["read_lesion_ml"] == by["0-3 mm"]["lesion_ml"]
    assert sum(r["read_normal_ml"] for r in shells) == 0.0
    assert sum(r["core_read_ml"] for r in darkness) == pytest.approx(sum(r["core_ml"] for r in darkness))
    assert sum(r["normal_read_ml"] for r in darkness) == 0.0
