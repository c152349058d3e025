"""Where a WML model's counted millilitres lie, by the development heads' own tissue labels.

A case's volume error mixes lesion missed with millilitres counted elsewhere. This reads each development head
(``devcases``: development cases only, never the stress set) through the service's runtime and post-processing and
splits the counted fraction into what lies on the truth lesion (fraction >= ``RIM``) and what lies off it, the latter
by the head's label map (white matter, ventricles, sulcal CSF, cortex, deep grey, mimics) and by the head's drawn
tissue gaps (white matter minus CSF, grey minus white matter), the levels ``augment.low_contrast_head`` was built
for. Nothing is chosen here; it says where to look.

    PYTHONPATH=.:service .venv/bin/python -m training.false_ml --data /work/dev_data/choose [--models DIR] \\
        --out training/runs/false_ml_choose_<label>.json
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import devcases
from .insertion_probe import model_reader, reader_parser

RIM = 0.02  # the development set's smallest labelled lesion fraction (truth.json rim_min_fraction)
CSF_GAPS_HU = (16.0, 20.0)  # white matter minus CSF: bins below, between and above


def by_label(counted: np.ndarray, truth_fraction: np.ndarray, labels: np.ndarray, names: dict,
             voxel_ml: float) -> dict:
    """{"on_lesion": mL, "off_lesion": mL, "off_by_label": {name: mL}} of a counted fraction map (all on one grid)."""
    on = truth_fraction >= RIM
    off = np.where(on, 0.0, counted)
    by = defaultdict(float)
    for lab in np.unique(labels[off > 0]):
        by[names.get(str(int(lab)), str(int(lab)))] += float(off[labels == lab].sum(dtype=np.float64) * voxel_ml)
    return {"on_lesion": float(np.where(on, counted, 0.0).sum(dtype=np.float64) * voxel_ml),
            "off_lesion": float(off.sum(dtype=np.float64) * voxel_ml),
            "off_by_label": dict(sorted(by.items(), key=lambda kv: -kv[1]))}


def gap_bin(wm_minus_csf: float) -> str:
    lo, hi = CSF_GAPS_HU
    return f"< {lo:g}" if wm_minus_csf < lo else (f"{lo:g}-{hi:g}" if wm_minus_csf < hi else f">= {hi:g}")


def summary(rows: list[dict]) -> dict:
    """Off-lesion millilitres by label over all heads, and per white-matter/CSF gap bin (heads, mean, median)."""
    labels = defaultdict(float)
    for r in rows:
        for k, v in r["off_by_label"].items():
            labels[k] += v
    gaps = defaultdict(list)
    for r in rows:
        gaps[gap_bin(r["wm_minus_csf_hu"])].append(r["off_lesion"])
    return {"off_lesion_total": sum(r["off_lesion"] for r in rows),
            "on_lesion_total": sum(r["on_lesion"] for r in rows),
            "truth_total": sum(r["truth_ml"] for r in rows),
            "off_by_label": dict(sorted(labels.items(), key=lambda kv: -kv[1])),
            "off_by_csf_gap": {k: {"heads": len(v), "mean": float(np.mean(v)), "median": float(np.median(v))}
                               for k, v in sorted(gaps.items())}}


def read_head(case: Path, read) -> dict:
    truth, vol = devcases.read_series(case, "wml")
    tf = devcases.truth_array(case, truth, vol, "fraction").astype(np.float32)
    labels = devcases.truth_array(case, truth, vol, "labels")
    t = truth["tissue_hu"]
    return {"seed": int(truth["seed"]), "truth_ml": float(truth["wml_ml"]), "slice_mm": truth["slice_thickness"],
            "wm_minus_csf_hu": round(t["wm"] - t["csf"], 2), "gm_minus_wm_hu": round(t["gm"] - t["wm"], 2),
            **by_label(read(vol), tf, labels, truth["label_short_names"], vol.voxel_volume_mm3 / 1000.0)}


def main(argv=None) -> None:
    args = reader_parser(__doc__).parse_args(argv)
    label, read = model_reader(args.models, args.threads)
    rows = []
    for case in devcases.dev_case_dirs(args.data, args.n, "wml"):
        rows.append(read_head(case, read))
        r = rows[-1]
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(r["off_by_label"].items())[:3])
        print(f"  {case.name}: truth {r['truth_ml']:.2f}, on lesion {r['on_lesion']:.2f}, off {r['off_lesion']:.2f} "
              f"mL ({top}); WM-CSF {r['wm_minus_csf_hu']:.1f} HU", flush=True)
    res = {"model": label, "data": str(args.data), "summary": summary(rows), "heads": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    s = res["summary"]
    print(f"{label}: truth {s['truth_total']:.1f} mL, counted on lesion {s['on_lesion_total']:.1f}, "
          f"off {s['off_lesion_total']:.1f}")
    print("  off by label: " + ", ".join(f"{k} {v:.1f}" for k, v in s["off_by_label"].items() if v >= 0.05))
    for k, v in s["off_by_csf_gap"].items():
        print(f"  WM-CSF {k} HU: {v['heads']} heads, off-lesion mean {v['mean']:.2f}, median {v['median']:.2f} mL")


if __name__ == "__main__":  # pragma: no cover
    main()
