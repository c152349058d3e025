"""How much of a hypodensity of known size, contrast and place a WML model reads, on heads built by other code.

A model's figures on whole cases mix what it reads with what the cases hold. This probe asks one question at a time:
into each lesion-free NCCT development head it inserts soft spheres (diameter D of 5, 10, 20 and 30 mm, HU lowered
by 5 or 10 at the core, a 2 mm linear edge), in white matter only (the head's own label map), four sites per read,
at one of two places: periventricular (centre 2 to 2 + D/2 mm from the ventricle wall) or deep (more than 15 + D/2
mm from it); every site at least 4-5 mm from cortex and sulci, sites at least D + 25 mm apart. The head is read once
as it is and once per configuration, and at each site the model's counted fraction above the unaltered read (within
3 mm of the sphere in-plane and one slice through-plane) is set against the inserted volume. Sites are drawn from a
stream seeded by the head's seed, so every model sees the same insertions.

The spheres are this module's own, deliberately unlike any generator's lesions: the probe measures the model's
response to darkening of white matter as such, independent of shape and place priors. It refuses anything but
development cases (``devcases.dev_case_dirs``) and uses only their lesion-free heads.

    PYTHONPATH=.:service .venv/bin/python -m training.insertion_probe --data /work/dev_data/judge \\
        [--models DIR] --out training/runs/insertion_judge_<label>.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import ndimage

from . import devcases

SIZES_MM = (5, 10, 20, 30)
DROPS_HU = (5, 10)
PLACES = ("periventricular", "deep")
SITES_PER_READ = 4
EDGE_MM = 2.0
NEAR_MM = 3.0  # a read counts within this distance of the sphere in-plane (the manifests' support reach)
LESION_FREE_ML = 0.05
WM, CORTEX, SULCAL_CSF, VENTRICLES = 1, 2, 3, (4, 11)  # the development set's labels (devset/README.md)


def distances(labels: np.ndarray, spacing_mm) -> tuple[np.ndarray, np.ndarray]:
    """(mm to the ventricles, mm to cortex or sulci) of every voxel: what ``eligible`` places sites by."""
    sp = np.asarray(spacing_mm, float)
    return (ndimage.distance_transform_edt(~np.isin(labels, VENTRICLES), sampling=sp),
            ndimage.distance_transform_edt(~np.isin(labels, (CORTEX, SULCAL_CSF)), sampling=sp))


def eligible(labels: np.ndarray, dist: tuple[np.ndarray, np.ndarray], place: str, diameter: float) -> np.ndarray:
    """Voxels of white matter where a sphere of ``diameter`` may be centred at ``place`` (``dist``: ``distances``)."""
    to_vent, to_cortex = dist
    wm = labels == WM
    if place == "periventricular":
        return wm & (to_vent > 2) & (to_vent < 2 + diameter / 2) & (to_cortex > 4)
    return wm & (to_vent > 15 + diameter / 2) & (to_cortex > 5)


def pick_sites(ok: np.ndarray, spacing_mm, diameter: float, rng: np.random.Generator, n: int = SITES_PER_READ):
    """Up to ``n`` voxel indices among ``ok``, pairwise more than ``diameter`` + 25 mm apart."""
    sp = np.asarray(spacing_mm, float)
    cand = np.argwhere(ok)
    sites: list[np.ndarray] = []
    for c in cand[rng.permutation(len(cand))[:3000]]:
        if all(np.linalg.norm((c - q) * sp) > diameter + 25 for q in sites):
            sites.append(c)
            if len(sites) == n:
                break
    return sites


def sphere(shape, spacing_mm, centre, diameter: float, within: np.ndarray):
    """(box slices, occupancy 0..1 in the box) of a sphere with a linear ``EDGE_MM`` edge, restricted to ``within``."""
    sp = np.asarray(spacing_mm, float)
    c = np.asarray(centre)
    reach = np.ceil((diameter / 2 + EDGE_MM + NEAR_MM) / sp).astype(int) + 1  # room for site_read's margin
    lo, hi = np.maximum(c - reach, 0), np.minimum(c + reach + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    g = np.indices(tuple(hi - lo), dtype=float)
    dist = np.sqrt(sum(((g[i] + lo[i] - c[i]) * sp[i]) ** 2 for i in range(3)))
    occ = np.clip(0.5 - (dist - diameter / 2) / EDGE_MM, 0, 1) * within[box]
    return box, occ.astype(np.float32)


def site_read(base: np.ndarray, read: np.ndarray, box, occ: np.ndarray, voxel_ml: float,
              pixel_mm: float) -> tuple[float, float]:
    """(inserted mL, read mL): the counted fraction above the unaltered read within ``NEAR_MM`` in-plane of the
    sphere and one slice either side of that (``box`` must hold the margin: ``sphere`` leaves it)."""
    inside = occ > 0
    near = np.stack([ndimage.distance_transform_edt(~s) * pixel_mm <= NEAR_MM if s.any() else s for s in inside])
    near = ndimage.binary_dilation(near, structure=np.ones((3, 1, 1), bool))
    return float(occ.sum() * voxel_ml), float((np.clip(read[box] - base[box], 0, None) * near).sum() * voxel_ml)


def probe_head(case: Path, read_fn) -> list[dict]:
    """Every configuration on one lesion-free head; ``read_fn(volume) -> counted fraction map``."""
    truth, vol = devcases.read_series(case, "wml")
    labels = devcases.truth_array(case, truth, vol, "labels")
    sp = (vol.slice_spacing, *vol.pixel_spacing)
    voxel_ml = vol.voxel_volume_mm3 / 1000.0
    base = read_fn(vol)
    rng = np.random.default_rng(int(truth["seed"]))
    dist = distances(labels, sp)
    rows = []
    for place in PLACES:
        for d in SIZES_MM:
            sites = pick_sites(eligible(labels, dist, place, d), sp, d, rng)
            spheres = [sphere(vol.shape, sp, c, d, labels == WM) for c in sites]
            for drop in DROPS_HU:
                if not spheres:
                    continue
                arr = vol.array.copy()
                for box, occ in spheres:
                    arr[box] -= np.float32(drop) * occ
                read = read_fn(dataclasses.replace(vol, array=arr))
                for (box, occ), c in zip(spheres, sites):
                    ins, got = site_read(base, read, box, occ, voxel_ml, min(vol.pixel_spacing))
                    rows.append(dict(seed=int(truth["seed"]), place=place, diameter_mm=d, drop_hu=drop,
                                     site=[int(v) for v in c], inserted_ml=ins, read_ml=got))
    return rows


def summary(rows: list[dict]) -> dict:
    """Per (place, size, drop): sites, share of the inserted volume read (sums over sites), sites read below 0.1."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["place"], r["diameter_mm"], r["drop_hu"])].append(r)
    out = {}
    for (place, d, drop), rs in sorted(groups.items()):
        ins = sum(r["inserted_ml"] for r in rs)
        out[f"{place} {d} mm {drop} HU"] = dict(
            sites=len(rs), read_share=sum(r["read_ml"] for r in rs) / ins if ins > 0 else None,
            sites_below_0_1=sum(r["read_ml"] < 0.1 * r["inserted_ml"] for r in rs))
    return out


def model_reader(models: Path | None, threads: int):
    """``read_fn`` for the active WML model under ``models`` (packaged models when None): the counted fraction."""
    from svdmark.domain import Task
    from svdmark.infer.registry import ModelRegistry
    from svdmark.infer.runtime import Runtime
    from svdmark.measure import counted_fraction, wml_postprocessing

    spec = ModelRegistry(models).active(Task.WML)
    rt = Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=threads)

    def read(vol):
        return counted_fraction(rt.run(spec, vol).fraction, **wml_postprocessing(spec.manifest, vol))

    return spec.label, read


def reader_parser(doc: str) -> argparse.ArgumentParser:
    """The command line of a probe that reads development heads with a models folder's WML model and writes JSON;
    a probe adds its own options before parsing."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a development set folder (devset.build)")
    ap.add_argument("--n", type=int, default=None, help="its first N cases (default: all)")
    ap.add_argument("--models", type=Path, default=None, help="models folder (default: the packaged models)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    return ap


def main(argv=None) -> None:
    args = reader_parser(__doc__).parse_args(argv)
    label, read = model_reader(args.models, args.threads)
    rows = []
    for case in devcases.dev_case_dirs(args.data, args.n, "wml"):
        truth = json.loads((case / "truth.json").read_text())
        if float(truth["wml_ml"]) >= LESION_FREE_ML:
            continue
        rows += probe_head(case, read)
        print(f"  {case.name}: {len(rows)} sites so far", flush=True)
    res = {"model": label, "data": str(args.data), "summary": summary(rows), "sites": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    for k, v in res["summary"].items():
        share = "n/a" if v["read_share"] is None else f"{v['read_share']:.2f}"
        print(f"{k:32s} sites {v['sites']:3d}  read {share}  below 0.1: {v['sites_below_0_1']}")


if __name__ == "__main__":  # pragma: no cover
    main()
