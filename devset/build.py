"""Build development-set cases: ``python -m devset.build --n 40 --out DIR [--start I] [--small]``.

Case i uses seed 7330000 + i and depends on nothing else. Each case is written to
``OUT/wml_<seed>/dicom/IM<n>.dcm`` (one CT image per slice, shuffled names), ``truth.json`` and
``truth.npz`` (``fraction`` float16 and ``labels`` uint8, shape (slices, rows, cols), slices in the
order of ``truth.json``'s ``sop_uids``: ascending along the slice normal, i.e. inferior to superior).
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from devset import anatomy, cli, ct, dicomio, lesions, mimics

SEED_BASE = 7330000
GENERATOR_VERSION = "devset-1"
RIM_MIN_FRACTION = 0.02  # rim label: 0.02 <= fraction < 0.5


def plan(seed: int, small: bool = False) -> dict:
    """The case's top-level draws (cheap; no volumes are built)."""
    rng = np.random.default_rng(seed)
    phenotype, target = lesions.draw_burden(rng)
    atrophy = float(np.clip(rng.beta(2.2, 2.6) + (0.12 if target > 10 else 0.0), 0.02, 1.0))
    acq = ct.draw(rng, small)
    style = dicomio.draw_style(rng, acq.vendor, acq.kernel_class, acq.thickness)
    return dict(seed=seed, phenotype=phenotype, target_ml=target, atrophy=atrophy, acq=acq, style=style)


def _world_fine_ml(frac_t: np.ndarray, ph: anatomy.Phantom, geo: ct.Geometry, thickness: float) -> tuple[float, float]:
    """(lesion volume inside the scanned slab, whole-brain lesion volume) integrated on the template grid."""
    g = ph.grid
    idx = np.argwhere(frac_t > 0)
    if idx.size == 0:
        return 0.0, 0.0
    vals = frac_t[tuple(idx.T)].astype(np.float64)
    u = idx[:, ::-1] * g.h + g.origin
    p = u @ geo.R.T + geo.t
    d = p @ geo.normal
    lo = geo.centres[0] @ geo.normal - thickness / 2.0
    hi = geo.centres[-1] @ geo.normal + thickness / 2.0
    inside = (d >= lo) & (d < hi)
    v = g.h ** 3 / 1000.0
    return float(vals[inside].sum() * v), float(vals.sum() * v)


def build_case(seed: int, out: Path, small: bool = False) -> dict:
    t0 = time.time()
    pl = plan(seed, small)
    acq, style = pl["acq"], pl["style"]
    h = 2.0 if small else 1.0
    ph = anatomy.build(np.random.default_rng([seed, 1]), h, pl["atrophy"])
    mim = mimics.add(np.random.default_rng([seed, 2]), ph, min(1.0, pl["target_ml"] / 30.0))
    dv, dw = anatomy.distances(ph, 2 if h < 1.5 else 1)
    frac_t, les = lesions.make(np.random.default_rng([seed, 3]), ph, pl["phenotype"], pl["target_ml"], dv, dw)
    del dv, dw
    geo = ct.geometry(acq, ph, small)
    img, frac, labels, outside, stats = ct.render(np.random.default_rng([seed, 4]), acq, geo, ph, frac_t)
    labels[frac >= 0.5] = anatomy.WML
    labels[(frac >= RIM_MIN_FRACTION) & (frac < 0.5)] = anatomy.WML_RIM
    case = out / f"wml_{seed}"
    if case.exists():
        shutil.rmtree(case)
    sops = dicomio.write_series(case / "dicom", seed, img, outside, geo, acq, style, np.random.default_rng([seed, 5]))
    frac16 = frac.astype(np.float16)
    vox_ml = acq.pixel_spacing ** 2 * acq.thickness / 1000.0
    fine_ml, total_ml = _world_fine_ml(frac_t, ph, geo, acq.thickness)
    mim = list(mim) + [
        dict(kind="beam hardening", amplitude_hu=round(acq.bh_amp, 2)),
        dict(kind="streak noise", sd_ratio=round(acq.streak_ratio, 3)),
        dict(kind="partial volume at ventricle edges"),
    ]
    truth = dict(
        seed=seed, generator=GENERATOR_VERSION, vendor=style["manufacturer"], model=style["model"],
        slice_thickness=acq.thickness, tilt_deg=acq.tilt_deg, tilt_style=acq.tilt_style,
        atrophy=round(pl["atrophy"], 4), phenotype=pl["phenotype"], kernel=style["kernel"],
        kernel_class=acq.kernel_class, noise_sd_hu=round(stats["noise_sd_hu"], 3), mimics=mim,
        wml_ml=float(frac16.astype(np.float64).sum() * vox_ml),
        wml_mask_ml=float((frac16 >= 0.5).sum() * vox_ml),
        wml_world_fine_ml=fine_ml, wml_whole_brain_ml=total_ml, target_ml=pl["target_ml"], lesion=les,
        sop_uids=sops,
        slice_order="ascending along the slice normal (inferior to superior); index k <-> sop_uids[k]",
        voxel_ml=vox_ml,
        acquisition=dict(
            n_slices=int(img.shape[0]), rows=int(img.shape[1]), cols=int(img.shape[2]),
            pixel_spacing=[acq.pixel_spacing, acq.pixel_spacing], slice_thickness=acq.thickness,
            spacing_between_slices=acq.thickness, fov_mm=acq.fov, kvp=acq.kvp, ctdivol_mgy=round(acq.ctdi_mgy, 1),
            noise_target_hu=round(acq.noise_target, 3), series_description=style["description"],
            rescale_intercept=style["intercept"], pixel_representation=0 if style["unsigned"] else 1,
            pose_deg=dict(yaw=acq.pose_deg[0], roll=acq.pose_deg[1], pitch=acq.pose_deg[2]),
            slice_profile_sigma=acq.ssp_sigma, psf_mm=round(acq.psf_mm, 3), aec_gamma=round(acq.aec_gamma, 3),
            body_part=style["body_part"], small=small,
        ),
        image_stats=dict(wm_image_sd_hu=round(stats["wm_image_sd_hu"], 3), wm_mean_hu=round(stats["wm_mean_hu"], 2)),
        tissue_hu={k: round(float(v), 2) for k, v in ph.tissue.items()},
        anatomy=ph.info,
        label_names={str(k): v[1] for k, v in anatomy.LABELS.items()},
        label_short_names={str(k): v[0] for k, v in anatomy.LABELS.items()},
        rim_min_fraction=RIM_MIN_FRACTION,
    )
    np.savez_compressed(case / "truth.npz", fraction=frac16, labels=labels)
    truth["seconds"] = round(time.time() - t0, 2)
    (case / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def _describe(tr: dict) -> str:
    return (f"wml_{tr['seed']}: {tr['wml_ml']:.2f} mL ({tr['phenotype']}), {tr['slice_thickness']:g} mm, "
            f"{tr['acquisition']['n_slices']} slices, noise {tr['noise_sd_hu']:.1f} HU, {tr['vendor']} "
            f"{tr['kernel']}, tilt {tr['tilt_deg']:.0f} ({tr['tilt_style']}), {tr['seconds']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    return cli.run(argv, "devset.build", __doc__, SEED_BASE, "tiny fast cases (128x128, 5 mm, a few slices)",
                   build_case, _describe)


if __name__ == "__main__":
    sys.exit(main())
