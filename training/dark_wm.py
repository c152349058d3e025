"""Where a training generator's white matter is dark, and whether it labels that darkness: by distance to CSF.

Two generators can draw the same look and label it differently: one leaves faint periventricular darkening (partial
volume, an unlabelled halo, cupping) as normal white matter, the other labels a halo of the same look as lesion. A
model trained on both learns doubt where they disagree. This probe measures, per head and pooled over a split, in
shells of distance from CSF-dense voxels (0-3, 3-6, 6-10, > 10 mm):

* the normal white matter (white-matter fraction ≥ 0.9, no lesion) and how much of it is *visibly dark* by
  ``training.visibility``'s rule (smoothed HU more than two smoothed-noise SDs below the far white matter's mean);
* its mean HU below that mean (the darkening a model must call normal);
* the labelled lesion volume (truth fraction summed) and its mean HU below that mean (the darkening it must call
  lesion).

CSF-dense voxels are found in the image, not taken from the generator, so both generators are measured alike:
smoothed HU between -30 and the far white matter's mean less 12 HU, outside any lesion (truth fraction < 0.1), in
components of at least 0.2 mL. Far white matter is normal white matter more than 10 mm from them.

``--read`` runs the active WML model (or ``--models``) through the service's runtime and measurement and adds where it
marks lesion: its share of each shell's lesion, its calls in each shell's normal white matter, and the same for
lesion core and normal white matter binned by their own smoothed darkness. Session 40 found that wml-ncct 1.12.5
reads equal darkness differently in the two generators' heads (training/README.md).

    SVDMARK_TRAIN_ATROPHY_NCCT=0.75 SVDMARK_TRAIN_WML_SPREAD=0.5 [SVDMARK_TRAIN_SYNTH_CT=1] \\
        PYTHONPATH=.:service .venv/bin/python -m training.dark_wm --set val --n 12 [--read] [--squint-mm 4]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from svdmark.domain import Task
from svdmark.infer import ModelRegistry, Runtime
from svdmark.measure import from_output

from . import data
from .data import RUNS
from .evaluate import refuse_reported, split_seeds
from .visibility import K_SD, SQUINT_MM

SHELLS_MM = ((0.0, 3.0, "0-3 mm"), (3.0, 6.0, "3-6 mm"), (6.0, 10.0, "6-10 mm"), (10.0, 1e9, "> 10 mm"))
CSF_BELOW_WM_HU = 12.0  # a CSF-dense voxel is at least this far below the far white matter's mean
CSF_MIN_ML = 0.2  # smaller dark specks are noise or lesion, not CSF
DARKNESS_HU = (-1e9, 0.0, 2.0, 4.0, 6.0, 8.0, 12.0, 1e9)  # bins of a voxel's smoothed HU below the far white matter


def wml_reader(models: Path | None, threads: int):
    """(label for a run file, read): ``read(volume)`` is the active WML model's lesion mask of a volume (the model root
    ``models``, or the shipped models), through the service's runtime and measurement."""
    spec = ModelRegistry(models).active(Task.WML)
    runtime = Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=threads)

    def read(vol) -> np.ndarray:
        return from_output(spec, vol, runtime.run(spec, vol)).mask.astype(bool)

    return "_" + spec.label.replace(" ", "-"), read


def shells(hu: np.ndarray, fraction: np.ndarray, wm_fraction: np.ndarray, spacing_mm: tuple,
           read: np.ndarray | None = None, squint_mm: float = SQUINT_MM) -> tuple[list[dict], list[dict]]:
    """The per-shell figures of one head (module doc); ``spacing_mm`` is (slice, row, column) in mm. ``read``: a
    model's lesion mask of the head, whose share of each shell's lesion and whose calls in its normal white matter
    are added, and returned a second table: lesion core and normal white matter by their own darkness (smoothed HU
    below the far white matter, ``DARKNESS_HU`` bins), each with the volume the model reads there."""
    normal = (wm_fraction >= 0.9) & (fraction == 0)
    dz, dy, dx = spacing_mm
    ml = dz * dy * dx / 1000.0
    smooth = ndimage.gaussian_filter(hu, (0.0, squint_mm / dy, squint_mm / dx))
    level = float(np.median(hu[normal]))  # first guess, refined on the far white matter below
    for _ in range(2):
        csf = (smooth > -30.0) & (smooth < level - CSF_BELOW_WM_HU) & (fraction < 0.1)
        lab, n = ndimage.label(csf)
        sizes = ndimage.sum_labels(csf, lab, np.arange(1, n + 1)) * ml
        csf = np.isin(lab, 1 + np.flatnonzero(sizes >= CSF_MIN_ML))
        dist = ndimage.distance_transform_edt(~csf, sampling=spacing_mm)
        far = normal & (dist > 10.0)
        level = float(hu[far].mean())
    sd_smooth = float(smooth[ndimage.binary_erosion(far, iterations=2)].std())
    dark = smooth < level - K_SD * sd_smooth
    by_darkness = []
    if read is not None:  # how a model's reading follows a voxel's own darkness, in lesion core and in normal WM
        bins = np.digitize(level - smooth, DARKNESS_HU[1:-1])
        core = fraction >= 0.5
        for b in range(len(DARKNESS_HU) - 1):
            sel = bins == b
            by_darkness.append(dict(darkness=b, core_ml=float((sel & core).sum()) * ml,
                                    core_read_ml=float((sel & core & read).sum()) * ml,
                                    normal_ml=float((sel & normal).sum()) * ml,
                                    normal_read_ml=float((sel & normal & read).sum()) * ml))
    rows = []
    for lo, hi, name in SHELLS_MM:
        shell = (dist > lo) & (dist <= hi)
        wm, les = normal & shell, shell & (fraction > 0)
        core = shell & (fraction >= 0.5)
        rows.append(dict(shell=name, normal_ml=float(wm.sum()) * ml, dark_normal_ml=float((wm & dark).sum()) * ml,
                         normal_below_hu=level - float(hu[wm].mean()) if wm.any() else None,
                         lesion_ml=float(fraction[les].sum()) * ml,
                         lesion_below_hu=level - float(hu[core].mean()) if core.sum() >= 20 else None))
        if read is not None:
            rows[-1].update(read_lesion_ml=float(fraction[les & read].sum()) * ml,
                            read_normal_ml=float((wm & read).sum()) * ml)
    return rows, by_darkness


def pooled(heads: list[dict]) -> list[dict]:
    """Each shell's volumes summed over heads, its HU figures volume-weighted."""
    out = []
    for i, (_, _, name) in enumerate(SHELLS_MM):
        rs = [h["shells"][i] for h in heads]

        def weighted(key, w):
            pairs = [(r[key], r[w]) for r in rs if r[key] is not None and r[w] > 0]
            tot = sum(v for _, v in pairs)
            return sum(k * v for k, v in pairs) / tot if tot else None

        reads = {k: sum(r[k] for r in rs) for k in ("read_lesion_ml", "read_normal_ml") if all(k in r for r in rs)}
        out.append(dict(shell=name, normal_ml=sum(r["normal_ml"] for r in rs), **reads,
                        dark_normal_ml=sum(r["dark_normal_ml"] for r in rs),
                        normal_below_hu=weighted("normal_below_hu", "normal_ml"),
                        lesion_ml=sum(r["lesion_ml"] for r in rs),
                        lesion_below_hu=weighted("lesion_below_hu", "lesion_ml")))
    return out


def _fmt(v, spec="5.2f"):
    return "  n/a" if v is None else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", required=True, help="a training generator's validation split, e.g. val")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--read", action="store_true", help="also where the active WML model reads lesion, per shell")
    ap.add_argument("--models", type=Path, default=None, help="model root (default: the shipped models)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--squint-mm", type=float, default=SQUINT_MM, help="in-plane Gaussian σ of the smoothed image")
    args = ap.parse_args(argv)
    refuse_reported(args.set, "a probe sees only validation splits")
    heads = []
    label, reader = wml_reader(args.models, args.threads) if args.read else ("", None)
    for seed in split_seeds(args.set, args.n):
        case = data.ncct_case(seed, with_wm=True)
        vol = case.volume
        spacing = (vol.slice_spacing, *vol.pixel_spacing)
        read = reader(vol) if args.read else None
        by_shell, by_darkness = shells(np.asarray(vol.array, np.float32), case.truth_fraction.astype(np.float32),
                                       case.wm_fraction.astype(np.float32), spacing, read,
                                       args.squint_mm)
        h = dict(seed=seed, truth_ml=case.truth_ml, generator=case.params.get("generator", "svdmark_phantom"),
                 slice_thickness=case.params.get("slice_thickness"), shells=by_shell, by_darkness=by_darkness)
        heads.append(h)
        print(f"  {seed} ({h['generator']}, {h['slice_thickness']} mm, truth {h['truth_ml']:.2f} mL): " + "; ".join(
            f"{r['shell']} dark {r['dark_normal_ml']:.1f}/{r['normal_ml']:.0f} mL ({_fmt(r['normal_below_hu'], '.1f')}"
            f" HU) lesion {r['lesion_ml']:.1f} mL ({_fmt(r['lesion_below_hu'], '.1f')} HU)" for r in h["shells"]),
            flush=True)
    pool = pooled(heads)
    print("pooled:")
    for r in pool:
        print(f"  {r['shell']:8s} normal WM {r['normal_ml']:7.1f} mL, visibly dark {r['dark_normal_ml']:6.1f} mL, "
              f"{_fmt(r['normal_below_hu'])} HU below far WM | lesion {r['lesion_ml']:6.1f} mL, "
              f"{_fmt(r['lesion_below_hu'])} HU below" + (f" | read {r['read_lesion_ml']:6.1f} mL of it, "
                                                           f"{r['read_normal_ml']:6.1f} mL in normal WM"
                                                           if "read_lesion_ml" in r else ""))
    darkness = [{k: b if k == "darkness" else sum(h["by_darkness"][b][k] for h in heads)
                 for k in heads[0]["by_darkness"][b]} for b in range(len(DARKNESS_HU) - 1)] if args.read else []
    for r in darkness:
        lo, hi = DARKNESS_HU[r["darkness"]], DARKNESS_HU[r["darkness"] + 1]
        share = (lambda a, b: "  n/a" if r[b] == 0 else f"{r[a] / r[b]:5.2f}")
        print(f"  {max(lo, -99):5.0f}..{min(hi, 99):3.0f} HU below far WM: lesion core {r['core_ml']:7.1f} mL, read "
              f"{share('core_read_ml', 'core_ml')}; normal WM {r['normal_ml']:7.1f} mL, read "
              f"{share('normal_read_ml', 'normal_ml')}")
    env = data.training_environment()
    where = data.drawn_split_name(args.set, len(heads))
    RUNS.mkdir(exist_ok=True)
    squint = "" if args.squint_mm == SQUINT_MM else f"_squint{args.squint_mm:g}"
    (RUNS / f"dark_wm_{where}{label}{squint}.json").write_text(json.dumps(
        {"set": args.set, "squint_mm": args.squint_mm, "environment": env, "heads": heads, "pooled": pool,
         "darkness_hu": DARKNESS_HU[1:-1], "by_darkness": darkness}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
