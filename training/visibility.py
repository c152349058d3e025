"""How much of a development case's lesion volume the image shows at all: a ceiling for any reader.

A model can only be asked for what the pixels hold. For each NCCT development case this measures, against the
case's own normal white matter (tissue label 1, no lesion, eroded by 2 voxels): the lesion core's contrast
(mean HU where the truth fraction is ≥ 0.9), the voxel noise, their ratio (CNR), and the *visible* volume: the
truth volume in voxels whose in-plane smoothed HU (Gaussian, σ = 1.5 mm, a reader's squint) lies more than two
smoothed-noise SDs below the normal white-matter mean; and how well the smoothed HU alone tells lesion core from
normal white matter (ROC AUC: 0.5 is invisible, 1.0 separable by intensity alone). Normal white matter that is
visibly dark by the same rule (beam hardening, cupping, partial volume) is reported too: it is what a reader
must tell apart from lesion by shape and place. Given a run of ``training.evaluate --set dev`` on the same
folder, each model read is set beside it, so an under-read of lesion the image shows is told apart from lesion
no reader could see. The figures of a reader that reads exactly the visible lesion and nothing else (``oracle``) are
the ceiling of reading hypodensity: a target it misses is out of reach for any reader that does not extrapolate past
what the image shows.

    .venv/bin/python -m training.visibility --data /work/dev_data/judge \\
        --eval training/runs/eval_wml_dev-judge_30_wml-ncct-1.12.0-tta-lr.json

``--set val`` (a training generator's validation split, as ``training.data`` draws it under the environment's
``SVDMARK_TRAIN_*`` shares) asks the same of the heads a model learns from: normal white matter there is the
generator's white-matter fraction ≥ 0.9 outside the lesion. A label the pixels do not show teaches a model doubt.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from svdmark.domain import Volume

from . import data, devcases
from .data import RUNS
from .compare import WmlReading, wml_figures
from .evaluate import refuse_reported, split_seeds

SQUINT_MM = 1.5  # in-plane Gaussian σ of the smoothed image
K_SD = 2.0  # a smoothed voxel is "visibly dark" below the normal WM mean minus this many smoothed SDs
CORE = 0.9  # truth fraction of the lesion core whose contrast is measured
BINS = ((0.0, 1.0, "< 1 mL"), (1.0, 10.0, "1-10 mL"), (10.0, 25.0, "10-25 mL"), (25.0, 1e9, "> 25 mL"))


def dev_head(case: Path) -> tuple[dict, Volume, np.ndarray, np.ndarray]:
    """A development case's truth (``truth.json``), loaded volume, lesion fraction and normal white matter (tissue
    label 1, no lesion), the fraction and labels in the volume's slice order."""
    truth, vol = devcases.read_series(case, "wml")
    fraction = devcases.truth_array(case, truth, vol, "fraction").astype(np.float32)
    labels = devcases.truth_array(case, truth, vol, "labels")
    return truth, vol, fraction, (labels == 1) & (fraction == 0)


def training_head(seed: int) -> tuple[data.NcctCase, np.ndarray, np.ndarray]:
    """A training-generator case (``training.data.ncct_case``, with its white-matter map), its lesion fraction and
    its normal white matter (white-matter fraction >= 0.9, no lesion)."""
    case = data.ncct_case(seed, with_wm=True)
    fraction = case.truth_fraction.astype(np.float32)
    return case, fraction, (case.wm_fraction >= 0.9) & (fraction == 0)


def case_visibility(case: Path, k_sd: float = K_SD) -> dict:
    """The figures of one development case (module doc)."""
    truth, vol, fraction, normal_wm = dev_head(case)
    return dict(seed=int(truth["seed"]), truth_ml=float(truth["wml_ml"]), slice_thickness=truth["slice_thickness"],
                atrophy=truth["atrophy"], **visibility(vol, fraction, normal_wm, k_sd))


def training_case_visibility(seed: int, k_sd: float = K_SD) -> dict:
    """The figures of one training-generator case (``training.data.ncct_case``; module doc)."""
    case, fraction, normal_wm = training_head(seed)
    return dict(seed=seed, truth_ml=case.truth_ml, slice_thickness=case.params.get("slice_thickness"),
                atrophy=case.params.get("atrophy"), generator=case.params.get("generator", "svdmark_phantom"),
                drawn_contrast_hu=case.contrast_hu, **visibility(case.volume, fraction, normal_wm, k_sd))


def visibility(vol, fraction: np.ndarray, normal_wm: np.ndarray, k_sd: float = K_SD) -> dict:
    """Contrast, noise, CNR, AUC and visible volume (``k_sd`` smoothed SDs below the normal white matter's mean) of
    one head's lesion against its normal white matter."""
    hu = np.asarray(vol.array, np.float32)
    normal = ndimage.binary_erosion(normal_wm, iterations=2)
    sigma = (0.0, SQUINT_MM / vol.pixel_spacing[0], SQUINT_MM / vol.pixel_spacing[1])
    smooth = ndimage.gaussian_filter(hu, sigma)
    wm_mean, wm_sd, wm_sd_smooth = float(hu[normal].mean()), float(hu[normal].std()), float(smooth[normal].std())
    core = fraction >= CORE
    contrast = wm_mean - float(hu[core].mean()) if core.sum() >= 20 else None  # too few voxels: no figure
    visible = smooth < wm_mean - k_sd * wm_sd_smooth
    auc = _auc(smooth[normal], smooth[core]) if core.sum() >= 20 else None
    ml = vol.voxel_volume_mm3 / 1000.0
    return dict(visible_ml=float(fraction[visible].sum()) * ml, wm_hu=wm_mean,
                contrast_hu=contrast, wm_sd_hu=wm_sd, auc=auc, cnr=None if contrast is None else contrast / wm_sd,
                # normal tissue that looks like lesion: the floor of a reader that takes what is visibly dark
                dark_normal_ml=float((normal_wm & visible).sum()) * ml)


def _auc(normal: np.ndarray, lesion: np.ndarray, n: int = 20000) -> float:
    """P(a lesion-core voxel is darker than a normal one), on at most ``n`` voxels of each (fixed seed)."""
    rng = np.random.default_rng(0)
    a = rng.choice(normal, min(n, normal.size), replace=False)
    b = rng.choice(lesion, min(n, lesion.size), replace=False)
    ranks = np.argsort(np.argsort(np.concatenate([b, a]), kind="stable"), kind="stable") + 1.0
    u = ranks[:b.size].sum() - b.size * (b.size + 1) / 2  # lesion ranks low when darker
    return float(1.0 - u / (a.size * b.size))


def summarise(rows: list[dict]) -> dict:
    out = {}
    for lo, hi, name in BINS:
        sel = [r for r in rows if lo <= r["truth_ml"] < hi]
        if not sel:
            continue
        truth = sum(r["truth_ml"] for r in sel)
        entry = {"n": len(sel), "truth_ml": truth, "visible_share": sum(r["visible_ml"] for r in sel) / truth
                 if truth else None}
        if all("model_ml" in r for r in sel):
            entry["model_share"] = sum(r["model_ml"] for r in sel) / truth if truth else None
            entry["model_mae_ml"] = float(np.mean([abs(r["model_ml"] - r["truth_ml"]) for r in sel]))
        out[name] = entry
    return out


def oracle(rows: list[dict]) -> dict:
    """The figures of a reader that reads each head's visible lesion volume exactly and nothing else (no false
    millilitre), against the truth: the best any reader of visible hypodensity can do without extrapolating past
    what the image shows; and of the same reading times the one factor that gives it the lowest MAE, which no
    reader knows beforehand (a calibration to this generator)."""
    truth = np.array([r["truth_ml"] for r in rows])
    seen = np.array([r["visible_ml"] for r in rows])
    factors = np.arange(1.0, 4.001, 0.05)
    best = float(factors[int(np.argmin([np.abs(seen * f - truth).mean() for f in factors]))])
    return {"as_seen": wml_figures([WmlReading(t, v, True) for t, v in zip(truth, seen)]),
            "best_factor": best,
            "scaled": wml_figures([WmlReading(t, v * best, True) for t, v in zip(truth, seen)])}


def add_source_arguments(ap: argparse.ArgumentParser) -> None:
    """``--data DIR`` (a development-set folder), ``--extra DIR`` (another generator's heads trained on) or ``--set
    SPLITS`` (a training generator's validation splits)."""
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="a development-set folder (devset.build)")
    src.add_argument("--extra", type=Path, help="another generator's heads a model was trained on "
                     "(train_wml --extra-ncct): what it was asked to fit")
    src.add_argument("--set", help="a training generator's validation split(s), e.g. val or val,val_atlas")


def source_folders(args: argparse.Namespace) -> list[Path]:
    """The case folders of ``--data`` (development cases only) or ``--extra`` (never development or stress cases)."""
    return devcases.case_dirs(args.extra or args.data, args.n, extra=bool(args.extra))


def source_seeds(args: argparse.Namespace) -> list[int]:
    """The seeds of ``--set`` (12 unless ``--n``); SystemExit for a split whose figures are reported."""
    refuse_reported(args.set, "a probe sees only validation splits")
    return split_seeds(args.set, args.n or 12)


def source_text(args: argparse.Namespace) -> str:
    """The source as given, for a run file's ``data``: the folder or the split names."""
    return str(args.data or args.extra or args.set)


def source_name(args: argparse.Namespace, n: int) -> str:
    """What a run file is named for: the folder, or the split drawn under the environment's shares."""
    folder = args.data or args.extra
    return folder.name if folder else data.drawn_split_name(args.set, n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(ap)
    ap.add_argument("--eval", type=Path, default=None, help="training.evaluate run on the same folder or split")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--k-sd", type=float, default=K_SD,
                    help="visibly dark: this many smoothed-noise SDs below the normal white matter's mean")
    args = ap.parse_args(argv)
    reads = {}
    if args.eval is not None:
        run = json.loads(args.eval.read_text())
        reads = {r["seed"]: r["model"] for r in run["cases"]}
    rows = []
    if args.set:
        cases = [(training_case_visibility, seed) for seed in source_seeds(args)]
    else:
        cases = [(case_visibility, case) for case in source_folders(args)]
    for figures, case in cases:
        r = figures(case, args.k_sd)
        if r["seed"] in reads:
            r["model_ml"] = reads[r["seed"]]
        rows.append(r)
        cnr = "  n/a" if r["cnr"] is None else f"{r['cnr']:5.2f}"
        auc = "  n/a" if r["auc"] is None else f"{r['auc']:5.2f}"
        read = f" model {r['model_ml']:6.2f}" if "model_ml" in r else ""
        print(f"  {r['seed']}: truth {r['truth_ml']:6.2f} visible {r['visible_ml']:6.2f}{read} mL  CNR {cnr}  "
              f"AUC {auc}  WM {r['wm_hu']:5.1f} HU  dark normal WM {r['dark_normal_ml']:5.2f} mL  "
              f"({r['slice_thickness']} mm{', ' + r['generator'] if 'generator' in r else ''})", flush=True)
    env = data.training_environment()  # the shares that drew a training split's heads
    res = {"data": source_text(args), "environment": env, "eval": str(args.eval) if args.eval else None,
           "squint_mm": SQUINT_MM, "k_sd": args.k_sd, "cases": rows, "by_bin": summarise(rows), "oracle": oracle(rows)}
    for name, e in res["by_bin"].items():
        print(f"  {name:9s} n={e['n']:2d}: visible {e['visible_share']:.2f} of truth"
              + (f", model reads {e['model_share']:.2f} of truth (MAE {e['model_mae_ml']:.2f} mL)"
                 if "model_share" in e else ""))
    for name, f in (("as seen", res["oracle"]["as_seen"]), (f"x {res['oracle']['best_factor']:.2f}",
                                                          res["oracle"]["scaled"])):
        low = "n/a" if f["mae_lt1_ml"] is None else f"{f['mae_lt1_ml']:.3f}"
        r = "n/a" if f["pearson_r"] is None else f"{f['pearson_r']:.3f}"
        print(f"  a reader of exactly the visible lesion, {name}: MAE {f['mae_ml']:.3f} mL, MAE < 1 mL {low}, r {r}")
    RUNS.mkdir(exist_ok=True)
    label = f"_{args.eval.stem.removeprefix('eval_wml_')}" if args.eval else ""
    label += "" if args.k_sd == K_SD else f"_k{args.k_sd:g}"
    (RUNS / f"visibility_{source_name(args, len(rows))}{label}.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
