"""Can a WML model's false regions be told from its lesions by their look and place? A probe (nothing shipped).

On `choose`, nearly all of 1.12.5's false millilitres lie in connected regions of their own, apart from the lesions
it finds: a perfect filter of its counted components (keep one when at least half its counted millilitres lie on the
truth lesion, :func:`oracle`) would take `choose` from MAE 6.98 / MAE < 1 mL 4.88 / r 0.63 to 6.30 / 0.18 / 0.90.
This asks whether a reader of each component's look and place (:data:`FEATURES`, from the image and the head's own
tissue levels, ``gap_probe.smoothed_head``, so a head whose CSF lies close to white matter is measured in its own
units) can be that filter. ``tables`` keeps every head's components (features, counted mL, the share on the truth
lesion) from the net's counted fraction (``training.counted``, cached under ``--cache``); ``cv`` fits an L2 logistic
model of "at least half on the lesion" (each component weighted by its millilitres + 0.01) with the heads split
into five folds, or on other tables (``--fit-on``, heads of another generator), and gives the AUC of each feature
alone and of the model, and the volumes it would leave at each threshold. Choices may be read off `choose` only.

    P="env PYTHONPATH=.:service SVDMARK_TRAIN_ATROPHY_NCCT=0.75 SVDMARK_TRAIN_WML_SPREAD=0.5 .venv/bin/python"
    $P -m training.component_probe tables --set dev --data /work/dev_data/choose --n 30 --out /tmp/cf_choose.npz
    $P -m training.component_probe cv --tables /tmp/cf_choose.npz
    SVDMARK_TRAIN_SYNTH_CT=1 $P -m training.component_probe tables --set train --n 40 --out /tmp/cf_synth.npz
    $P -m training.component_probe cv --tables /tmp/cf_choose.npz --fit-on /tmp/cf_synth.npz

Own code: the features are this probe's own; the AUC is scikit-learn's (installed with nilearn, the phantom extra).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy import optimize
from sklearn.metrics import roc_auc_score

from svdmark.domain import Task
from svdmark.infer import ModelRegistry, Runtime

from . import counted as probes
from .evaluate import wml_cases
from .gap_probe import SmoothedHead, smoothed_head
from .gated import figures

FEATURES = (
    "log_ml",  # log10 of the component's counted millilitres (+ 0.001)
    "mean_fraction",  # its counted fraction per voxel
    "peak_fraction",  # its largest counted fraction
    "darkness",  # white matter less its fraction-weighted smoothed HU, in units of the head's CSF-white-matter gap
    "csf_share",  # share of its voxels at or below the CSF level + 0.4 gap (ventricles and sulci read as lesion)
    "ring_contrast",  # brain above the CSF level 1-3 mm about it in-plane, less its own HU, in gap units
    "edge_mm",  # median in-plane distance of its voxels from the skull's inner rim
    "csf_mm",  # smallest in-plane distance from it to CSF (ventricles, sulci) off every component
    "slice_area",  # the intracranial area of its centre slice over the head's largest (skull base, vertex: small)
    "mirror_contrast",  # the same voxels mirrored about the slice's midline, less its own HU, in gap units
    "height_mm",  # its through-plane extent
    "background_contrast",  # normal white matter about it (within 6 HU of the head's level, smoothed over 15 mm)
    #                         less its own HU, in gap units: dark against the broad background, not from cupping
)

MIN_GAP_HU = 4.0  # a CSF-white-matter gap read smaller than this is taken as this (gap units stay finite)
CSF_SHARE_AT = 0.4  # csf_share counts voxels below csf + this x gap
CSF_CORE_AT = 0.25  # csf_mm measures to voxels below csf + this x gap
RING_MM = (1.0, 3.0)
BACKGROUND = (15.0, 6.0)  # background_contrast: Gaussian sigma (mm) and the band about white matter (HU) it averages


def components(counted: np.ndarray) -> tuple[np.ndarray, int]:
    """The 26-connected components of ``counted > 0``: (labels, how many)."""
    return ndi.label(counted > 0, structure=np.ones((3, 3, 3), bool))


def _in_plane_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """Each voxel's in-plane distance (mm) to the nearest voxel outside ``mask`` on its own slice (a slice without
    one: far)."""
    py, px = spacing
    out = np.full(mask.shape, 1e3, np.float32)
    for k, sl in enumerate(mask):
        if sl.any() and not sl.all():
            out[k] = ndi.distance_transform_edt(sl, sampling=(py, px))
    return out


def component_features(volume, counted: np.ndarray, head: SmoothedHead,
                       labels: np.ndarray | None = None, n: int | None = None) -> np.ndarray:
    """A (components, len(FEATURES)) table, row i for label i + 1 of :func:`components` (or the ``labels`` given)."""
    if labels is None:
        labels, n = components(counted)
    if not n:
        return np.zeros((0, len(FEATURES)))
    idx = np.arange(1, n + 1)
    py, px = (float(v) for v in volume.pixel_spacing)
    gap = max(head.wm - head.csf, MIN_GAP_HU)
    sm, inside = head.smooth, head.inside
    lesion = labels > 0
    lab = labels[lesion]  # the per-component statistics over counted voxels only: the background is most voxels
    frac, hu = counted[lesion], sm[lesion]
    nvox = np.bincount(lab, minlength=n + 1)[1:]
    mass = ndi.sum(frac, lab, idx)
    level = ndi.sum(frac * hu, lab, idx) / np.maximum(mass, 1e-9)
    ml = mass * volume.voxel_volume_mm3 / 1000.0
    edge = _in_plane_distance(inside, (py, px))
    csf_core = inside & ~lesion & (sm <= head.csf + CSF_CORE_AT * gap)
    to_csf = _in_plane_distance(~csf_core, (py, px))
    area = inside.sum(axis=(1, 2)).astype(float)
    mirrored = _mirrored(sm, inside)
    spacing_z = float(volume.slice_spacing or 1.0)
    rows = []
    parenchyma = inside & ~lesion & (sm > head.csf + CSF_SHARE_AT * gap)
    for i, sl in enumerate(ndi.find_objects(labels)):
        own_box = labels[sl] == i + 1
        ring = _ring_level(sm, parenchyma, sl, own_box, (py, px))
        ks = np.nonzero(own_box.any(axis=(1, 2)))[0] + sl[0].start
        centre = int(round(float(np.mean(ks))))
        own_mirror = mirrored[sl][own_box]
        mirror = float(np.nanmean(own_mirror)) if np.isfinite(own_mirror).any() else float("nan")
        rows.append((ring, float(area[centre] / max(area.max(), 1.0)), mirror, (ks.max() - ks.min() + 1) * spacing_z))
    ring, slice_area, mirror, height = (np.array(c, float) for c in zip(*rows))
    background = ndi.sum(frac * _background(head, (py, px))[lesion], lab, idx) / np.maximum(mass, 1e-9)
    table = np.column_stack([
        np.log10(ml + 1e-3),
        mass / np.maximum(nvox, 1),
        ndi.maximum(frac, lab, idx),
        (head.wm - level) / gap,
        ndi.mean(hu <= head.csf + CSF_SHARE_AT * gap, lab, idx),
        np.where(np.isfinite(ring), ring - level, 0.0) / gap,
        ndi.median(edge[lesion], lab, idx),
        ndi.minimum(to_csf[lesion], lab, idx),
        slice_area,
        np.where(np.isfinite(mirror), mirror - level, 0.0) / gap,
        height,
        (background - level) / gap,
    ])
    return table


def _background(head: SmoothedHead, spacing) -> np.ndarray:
    """Normal white matter's smoothed level about each voxel: a normalised Gaussian convolution (``BACKGROUND``)
    of the voxels within its band about the head's white-matter level."""
    sigma_mm, band = BACKGROUND
    normal = (head.inside & (np.abs(head.smooth - head.wm) < band)).astype(np.float32)
    s = (0.0, sigma_mm / spacing[0], sigma_mm / spacing[1])
    return ndi.gaussian_filter(head.smooth * normal, s) / np.maximum(ndi.gaussian_filter(normal, s), 1e-3)


def _ring_level(sm, parenchyma, sl, own_box, spacing) -> float:
    """Mean smoothed HU of the ``parenchyma`` (inside the skull, above the CSF level, off every component) in the
    in-plane ring ``RING_MM`` about one component (nan where there is none)."""
    py, px = spacing
    pad = int(math.ceil(RING_MM[1] / min(py, px))) + 1
    k0, k1 = sl[0].start, sl[0].stop
    r0, r1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, sm.shape[1])
    c0, c1 = max(sl[2].start - pad, 0), min(sl[2].stop + pad, sm.shape[2])
    own = np.zeros((k1 - k0, r1 - r0, c1 - c0), bool)
    own[:, sl[1].start - r0:sl[1].stop - r0, sl[2].start - c0:sl[2].stop - c0] = own_box
    dist = _in_plane_distance(~own, (py, px))
    box = (slice(k0, k1), slice(r0, r1), slice(c0, c1))
    ring = (dist > RING_MM[0]) & (dist <= RING_MM[1]) & parenchyma[box]
    return float(sm[box][ring].mean()) if ring.any() else float("nan")


def _mirrored(sm: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The smoothed image mirrored left-right about each slice's intracranial midline (nan outside the skull)."""
    out = np.full(sm.shape, np.nan, np.float32)
    cols = np.arange(sm.shape[2])
    for k in range(sm.shape[0]):
        if not inside[k].any():
            continue
        mid = float(np.mean(np.nonzero(inside[k])[1]))
        src = np.round(2 * mid - cols).astype(int)
        ok = (src >= 0) & (src < sm.shape[2])
        out[k][:, ok] = sm[k][:, src[ok]]
        out[k][~inside[k]] = np.nan
    return out


RIM = 0.02  # a voxel is on the lesion at this truth fraction (the development set's smallest labelled fraction)
ON_SHARE = 0.5  # a component is lesion when at least this share of its counted millilitres lies on the lesion
THRESHOLDS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def head_components(case, counted: np.ndarray) -> dict | None:
    """One head's component table: features, counted mL and the share on the truth lesion; None without levels."""
    head = smoothed_head(case.volume)
    if head is None:
        return None
    labels, n = components(counted)
    idx = np.arange(1, n + 1)
    voxel_ml = case.volume.voxel_volume_mm3 / 1000.0
    mass = np.asarray(ndi.sum(counted, labels, idx)) * voxel_ml if n else np.zeros(0)
    on = np.asarray(ndi.sum(counted * (case.truth_fraction >= RIM), labels, idx)) * voxel_ml if n else np.zeros(0)
    return {"features": component_features(case.volume, counted, head, labels, n), "ml": mass,
            "on_share": on / np.maximum(mass, 1e-9)}


def tables(split: str, n: int, data_dir: Path | None, runtime: Runtime, registry: ModelRegistry, cache: Path) -> dict:
    """Every head's components, stacked, with each row's head (seed) and each head's truth."""
    spec = registry.active(Task.WML)
    parts, truth = [], {}
    for case in wml_cases(split, n, data_dir):
        t = head_components(case, probes.case_counted(runtime, spec, case, cache))
        if t is None:
            print(f"  seed {case.seed}: no tissue levels, left out", flush=True)
            continue
        parts.append({**t, "seed": np.full(len(t["ml"]), case.seed)})
        truth[case.seed] = case.truth_ml
        print(f"  seed {case.seed}: truth {case.truth_ml:.2f}, {len(t['ml'])} components, {t['ml'].sum():.2f} mL "
              f"of which {(t['ml'] * t['on_share']).sum():.2f} on the lesion", flush=True)
    out = {k: np.concatenate([p[k] for p in parts]) for k in ("features", "ml", "on_share", "seed")}
    return {**out, "heads": np.array(sorted(truth)), "truth": np.array([truth[s] for s in sorted(truth)])}


def fit(features: np.ndarray, ml: np.ndarray, on_share: np.ndarray, l2: float = 1.0):
    """An L2 logistic model of ``on_share >= ON_SHARE`` over standardised features, weighted by millilitres; returns
    the function that gives P(lesion) of a feature table."""
    mean, scale = features.mean(axis=0), features.std(axis=0)
    scale[scale == 0] = 1.0
    z = (features - mean) / scale
    y = (on_share >= ON_SHARE).astype(float)
    w = (ml + 0.01) / np.mean(ml + 0.01)

    def loss(p):
        s = z @ p[:-1] + p[-1]
        g = w * (1.0 / (1.0 + np.exp(-s)) - y)
        return (np.sum(w * (np.logaddexp(0.0, s) - y * s)) + 0.5 * l2 * p[:-1] @ p[:-1],
                np.append(z.T @ g + l2 * p[:-1], g.sum()))

    p = optimize.minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B").x
    return lambda x: 1.0 / (1.0 + np.exp(-(((x - mean) / scale) @ p[:-1] + p[-1])))


def oracle(t: dict) -> dict:
    """The figures of a perfect filter: each head's components at least half on the lesion, and nothing else."""
    keep = t["on_share"] >= ON_SHARE
    return figures(t["truth"], np.array([t["ml"][(t["seed"] == h) & keep].sum() for h in t["heads"]]))


def cv(t: dict, fit_on: dict | None = None, folds: int = 5) -> dict:
    """Each component's P(lesion) from a model fitted on other heads (``folds`` head-grouped folds, or ``fit_on``),
    the AUC of each feature alone and of the model, and the figures at each threshold."""
    y, w = t["on_share"] >= ON_SHARE, t["ml"] + 0.01
    if fit_on is not None:
        p = fit(fit_on["features"], fit_on["ml"], fit_on["on_share"])(t["features"])
    else:
        fold = np.random.default_rng(0).permutation(len(t["heads"])) % folds
        p = np.zeros(len(y))
        for k in range(folds):
            test = np.isin(t["seed"], t["heads"][fold == k])
            p[test] = fit(t["features"][~test], t["ml"][~test], t["on_share"][~test])(t["features"][test])
    auc = {name: float(roc_auc_score(y, t["features"][:, j], sample_weight=w)) for j, name in enumerate(FEATURES)}
    volumes = {th: np.array([t["ml"][(t["seed"] == h) & (p >= th)].sum() for h in t["heads"]]) for th in THRESHOLDS}
    return {"auc_ml_weighted": float(roc_auc_score(y, p, sample_weight=w)), "auc_by_feature": auc,
            "by_threshold": {th: figures(t["truth"], v) for th, v in volumes.items()}, "oracle": oracle(t)}


def report(res: dict) -> str:
    lines = [f"model AUC (mL-weighted) {res['auc_ml_weighted']:.3f}; each feature alone: "
             + ", ".join(f"{k} {v:.2f}" for k, v in res["auc_by_feature"].items()),
             f"{'threshold':>10} {'MAE':>7} {'MAE<1':>7} {'score':>7} {'free med':>9} {'r':>6}"]
    for name, f in [*((f"{th:.1f}", f) for th, f in res["by_threshold"].items()), ("oracle", res["oracle"])]:
        lines.append(f"{name:>10} {f['mae_ml']:7.3f} {f['mae_lt1_ml']:7.3f} {f['target_score']:7.2f} "
                     f"{f['lesion_free_median_ml']:9.2f} {f['pearson_r']:6.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tables")
    t.add_argument("--set", default="dev")
    t.add_argument("--n", type=int, default=30)
    t.add_argument("--data", type=Path, default=None)
    t.add_argument("--models", type=Path, default=None)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--cache", type=Path, default=Path("/tmp/svdmark-counted"))
    t.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("cv")
    c.add_argument("--tables", type=Path, required=True)
    c.add_argument("--fit-on", type=Path, default=None, help="fit on these tables (another generator's heads)")
    a = ap.parse_args(argv)
    if a.cmd == "tables":
        rt = Runtime(providers=["CPUExecutionProvider"], intra_op_num_threads=a.threads)
        res = tables(a.set, a.n, a.data, rt, ModelRegistry(a.models), a.cache)
        np.savez_compressed(a.out, **res)
        print(f"-> {a.out}: {len(res['ml'])} components of {len(res['heads'])} heads")
        return 0
    with np.load(a.tables) as z:
        t = dict(z)
    fit_on = None
    if a.fit_on is not None:
        with np.load(a.fit_on) as z:
            fit_on = dict(z)
    print(report(cv(t, fit_on)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
