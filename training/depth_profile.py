"""How a generator's lesion darkens with depth inside its label: a step at the edge, or a graded core.

Each generator that draws CT white-matter lesions also decides where the label ends relative to the darkening. Ours
puts the label edge at half the lesion's contrast (``WmlModel.drop``: a symmetric soft edge), so the label is what
the pixels show. A lesion whose label follows a FLAIR-like extent (a core that fades out into the white matter, as
the periventricular halos of other generators do) darkens little at its label edge and fully only deep inside. A
net trained on the first reads the second's visible core and misses its faint rim: the under-read that grows with
the load. This probe measures the profile: per head, each voxel's in-plane distance from the label edge (mm, inside
positive; outside, only in normal white matter, negative) and its HU below the head's normal white-matter mean,
pooled per depth bin over heads, as a share of the deepest bin's darkening (``core``: depth ≥ 3 mm); with
``--read``, the share of each bin a WML model marks (inside: lesion it reads; outside: white matter it calls).

In-plane distances (per slice) because the slices are 2.5-5 mm thick: a through-plane distance would be the slice
thickness, not the lesion's shape. The raw HU is averaged (no smoothing); the noise averages out over the bin.

    PYTHONPATH=.:service .venv/bin/python -m training.depth_profile --data /work/dev_data/choose
    SVDMARK_TRAIN_ATROPHY_NCCT=0.75 SVDMARK_TRAIN_WML_SPREAD=0.5 [SVDMARK_TRAIN_SYNTH_CT=1] \\
        PYTHONPATH=.:service .venv/bin/python -m training.depth_profile --set val --n 48
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from . import data
from .dark_wm import wml_reader
from .data import RUNS
from .visibility import (add_source_arguments, dev_head, source_folders, source_name, source_seeds, source_text,
                         training_head)

# (lo, hi, name): signed in-plane depth in mm, inside the label positive
DEPTH_BINS = ((-4.0, -2.0, "out 2-4"), (-2.0, 0.0, "out 0-2"), (0.0, 1.0, "in 0-1"), (1.0, 2.0, "in 1-2"),
              (2.0, 3.0, "in 2-3"), (3.0, 1e9, "core >=3"))
MIN_ML = 3.0  # heads with at least this much lesion are pooled separately (the loads a net under-reads)


def signed_depth(mask: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Per slice, the in-plane distance (mm) of each voxel from the label edge: inside > 0, outside < 0."""
    out = np.zeros(mask.shape, np.float32)
    for k in range(mask.shape[0]):
        m = mask[k]
        if not m.any():
            out[k] = -1e3
            continue
        out[k] = ndimage.distance_transform_edt(m, sampling=spacing_yx) \
            - ndimage.distance_transform_edt(~m, sampling=spacing_yx)
    # a voxel just inside is 1 voxel from the nearest outside one: shift so the edge lies at 0 on both sides
    half = 0.5 * min(spacing_yx)
    return np.where(out > 0, out - half, out + half).astype(np.float32)


def head_profile(hu: np.ndarray, fraction: np.ndarray, normal_wm: np.ndarray, spacing_yx: tuple,
                 read: np.ndarray | None = None) -> dict:
    """Sum and count of (normal WM mean - HU) per depth bin for one head, and the count ``read`` marks; normal WM
    is eroded by 2 voxels for the mean, and the outside bins take only normal white matter (CSF and grey matter are
    not lesion rim)."""
    normal = ndimage.binary_erosion(normal_wm, iterations=2)
    wm_mean = float(hu[normal].mean())
    depth = signed_depth(fraction >= 0.5, spacing_yx)
    below = wm_mean - hu
    out = {}
    for lo, hi, name in DEPTH_BINS:
        sel = (depth >= lo) & (depth < hi)
        if lo < 0:
            sel &= normal_wm
        out[name] = (float(below[sel].sum()), int(sel.sum()), int(read[sel].sum()) if read is not None else 0)
    return out


def pooled(rows: list[dict]) -> dict:
    """HU below normal WM per bin pooled over ``rows`` (voxel-weighted), and each as a share of the core bin."""
    res = {}
    for _, _, name in DEPTH_BINS:
        below, n, marked = (sum(row["bins"][name][i] for row in rows) for i in range(3))
        res[name] = {"hu_below": below / n if n else None, "voxels": n, "read_share": marked / n if n else None}
    core = res[DEPTH_BINS[-1][2]]["hu_below"]
    for v in res.values():
        v["of_core"] = v["hu_below"] / core if v["hu_below"] is not None and core else None
    return res


def _heads(args):
    """(seed, truth mL, volume, lesion fraction, normal white matter) of each head, one at a time."""
    if args.set:
        for seed in source_seeds(args):
            case, fraction, normal_wm = training_head(seed)
            yield seed, case.truth_ml, case.volume, fraction, normal_wm
    else:
        for case in source_folders(args):
            truth, vol, fraction, normal_wm = dev_head(case)
            yield int(truth["seed"]), float(truth["wml_ml"]), vol, fraction, normal_wm


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(ap)
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--read", action="store_true", help="also the share of each bin the active WML model marks")
    ap.add_argument("--models", type=Path, default=None, help="model root (default: the shipped models)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    label, read = wml_reader(args.models, args.threads) if args.read else ("", lambda vol: None)
    rows = [dict(seed=seed, truth_ml=ml, bins=head_profile(np.asarray(vol.array, np.float32), fraction, normal_wm,
                                                           tuple(vol.pixel_spacing), read(vol)))
            for seed, ml, vol, fraction, normal_wm in _heads(args)]
    groups = {"all lesion heads": [r for r in rows if r["truth_ml"] > 0],
              f">= {MIN_ML:g} mL": [r for r in rows if r["truth_ml"] >= MIN_ML]}
    res = {"data": source_text(args), "environment": data.training_environment(), "cases": rows,
           "pooled": {g: pooled(sel) for g, sel in groups.items() if sel}}
    print(f"{'':18s}" + "".join(f"{name:>10s}" for _, _, name in DEPTH_BINS))
    for g, p in res["pooled"].items():
        print(f"{g + f' ({len(groups[g])})':18s}" + "".join(
            f"{p[name]['hu_below']:10.2f}" if p[name]["hu_below"] is not None else f"{'-':>10s}"
            for _, _, name in DEPTH_BINS) + "  HU below normal WM")
        print(f"{'':18s}" + "".join(
            f"{p[name]['of_core']:10.2f}" if p[name]["of_core"] is not None else f"{'-':>10s}"
            for _, _, name in DEPTH_BINS) + "  of the core's")
        if args.read:
            print(f"{'':18s}" + "".join(f"{p[name]['read_share']:10.2f}" for _, _, name in DEPTH_BINS)
                  + "  read by the model")
    RUNS.mkdir(exist_ok=True)
    (RUNS / f"depth_profile_{source_name(args, len(rows))}{label}.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
