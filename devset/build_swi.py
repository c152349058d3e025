"""Build SWI microbleed development cases: ``python -m devset.build_swi --n N --out DIR [--start I] [--small]``.

Case i uses seed 7335000 + i and depends on nothing else. Each case is written to
``OUT/cmb_<seed>/dicom/IM<n>.dcm`` (MR Image Storage, one slice per file, shuffled names), ``truth.json``
(microbleeds in DICOM patient coordinates, mimics, acquisition) and ``truth.npz`` (``labels`` uint8,
(slices, rows, cols), slice k <-> ``sop_uids[k]``, ascending along the slice normal).
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from devset import anatomy, cli
from devset import swi_bleeds as B
from devset import swi_contrast as C
from devset import swi_dicom as D
from devset import swi_scanner as S
from devset import swi_vessels as V

SEED_BASE = 7335000
GENERATOR_VERSION = "devset-swi-1"


def plan(seed: int, small: bool = False) -> dict:
    """The case's top-level draws (cheap; no volumes are built)."""
    rng = np.random.default_rng(seed)
    bp = B.draw_plan(rng)
    atrophy = float(np.clip(rng.beta(2.2, 2.6) + (0.1 if bp["grade"] >= 2 else 0.0), 0.02, 1.0))
    acq = S.draw(rng, small)
    style = D.draw_style(rng, acq)
    return dict(seed=seed, bleeds=bp, count=bp["count"], grade=bp["grade"], pattern=bp["pattern"], atrophy=atrophy,
                acq=acq, style=style)


def _r(v, n=2):
    return [round(float(x), n) for x in v]


def build_case(seed: int, out: Path, small: bool = False) -> dict:
    t0 = time.time()
    pl = plan(seed, small)
    acq, style = pl["acq"], pl["style"]
    h = 2.0 if small else 1.0
    c = 2 if h < 1.5 else 1
    ph = anatomy.build(np.random.default_rng([seed, 1]), h, pl["atrophy"])
    iron, calcs = C.paint_structures(np.random.default_rng([seed, 2]), ph, small)
    L = V.Lattice(ph, c)
    vessels = V.draw(np.random.default_rng([seed, 3]), ph, L, small)
    veins = [v for v in vessels if v.kind != "artery"]
    arts = [v for v in vessels if v.kind == "artery"]
    vfrac = V.rasterize(veins, ph.grid, acq.vein_widen)
    afrac = V.rasterize(arts, ph.grid, 1.0)
    geo = S.geometry(np.random.default_rng([seed, 4]), acq, ph, small)
    t_geo = time.time()

    # ---- bleeds (template coordinates), inside the slab (centre between the first and last slice centres)
    span = (geo.n - 1) * acq.spacing

    def inside(u):
        s = (geo.to_patient(u) - geo.centres[0]) @ geo.normal
        return (s >= 0.0) & (s <= span)

    placer = B.Placer(np.random.default_rng([seed, 5]), ph, L, vessels, calcs, inside, acq.vein_widen)
    cc: dict = {}
    bleeds = [b for b in (placer.place(s, acq.bloom_factor, cc) for s in pl["bleeds"]["specs"]) if b is not None]
    for b in bleeds:
        b.tags = placer.tag(b)

    # ---- contrast, vessel labels, distortion next to air
    tissue = C.draw_tissue(np.random.default_rng([seed, 6]))
    dair = C.air_distance(L, ph.grid, c)
    T, cinfo = C.template(np.random.default_rng([seed, 7]), ph, acq, tissue, vfrac, afrac, dair)
    brainish = np.isin(ph.labels, V.PAREN + (anatomy.CSF, anatomy.VENT, anatomy.CHOROID, C.IRON))
    ph.labels[(vfrac >= 0.5) & brainish] = C.VEIN
    ph.labels[(afrac >= 0.5) & brainish] = C.ARTERY
    del vfrac, afrac
    e_pat = geo.col if acq.pe_dir == "ROW" else geo.row  # readout direction: distortion runs along it
    e_t = e_pat @ geo.R
    lam = 1.5 * acq.dropout_len
    C.distort(ph, T, dair, e_t, acq.distortion_mm, lam)
    del dair
    for b in bleeds:
        b.c_app = C.shift(L, b.c[None], e_t, acq.distortion_mm, lam)[0]
        b.p = geo.to_patient(b.c_app)
    bleeds = [b for b in bleeds if bool(inside(geo.to_template(b.p)[None])[0])]

    # ---- sampling, bleeds, scanner
    img = S.sample(acq, geo, ph.grid, T)
    level = float(np.median(T[ph.labels == anatomy.WM]))
    del T
    labels = S.voxel_labels(geo, ph.grid, ph.labels)
    B.render(img, labels, geo, acq, bleeds, C.BLEED, C.BLOOM)
    centre = geo.to_patient(np.array([0.0, -4.0, 10.0]) * ph.scale)
    fin = S.finish(np.random.default_rng([seed, 8]), acq, geo, img, level, centre)
    t_img = time.time()

    case = out / f"cmb_{seed}"
    if case.exists():
        shutil.rmtree(case)
    sops = D.write_series(case / "dicom", seed, img, geo, acq, style, np.random.default_rng([seed, 9]))

    def pat(u):
        return _r(geo.to_patient(C.shift(L, np.asarray(u, float)[None], e_t, acq.distortion_mm, lam)[0]))

    mbs = []
    for b in bleeds:
        mbs.append(dict(
            center_mm=_r(b.p, 3), center_mm_undistorted=_r(geo.to_patient(b.c), 3),
            voxel_index=_r(geo.to_voxel(b.p[None])[0], 3), diameter_mm=round(2 * b.r, 3),
            axes_mm=_r(2 * b.r * b.axes, 3), bloom_diameter_mm=round(2 * b.rb, 3), location=b.loc,
            tags=sorted(set(b.tags)), placement=b.kind, group=b.group))
    count = len(mbs)
    mimics = []
    for d in calcs:
        mimics.append(dict(kind="calcification", site=d["site"], center_mm=pat(d["c"]),
                           diameter_mm=round(2 * d["r"], 2), phase_mask_darkened=False))
    for d in iron:
        mimics.append(dict(kind="iron-rich nucleus", site=d["site"], center_mm=pat(d["c"]),
                           semi_axes_mm=_r(np.asarray(d["r"]) * ph.scale, 1)))
    for lab, name in ((anatomy.PUT, "putamen"), (anatomy.PALL, "pallidum"), (anatomy.CAUD, "caudate")):
        mimics.append(dict(kind="iron-rich deep grey", site=name, r2star_3t=round(tissue[lab]["r2s"], 1),
                           signal_rel_wm=round(cinfo["lut"][anatomy.LABELS[lab][0]] / max(cinfo["lut"]["white matter"],
                                                                                          1e-6), 3)))
    for v in vessels:
        kind = "flow void (artery)" if v.kind == "artery" else f"vein ({v.kind})"
        mimics.append(dict(kind=kind, name=v.name, start_mm=pat(v.pts[0]), mid_mm=pat(v.pts[len(v.pts) // 2]),
                           end_mm=pat(v.pts[-1]), length_mm=round(float(np.linalg.norm(np.diff(v.pts, axis=0),
                                                                                          axis=1).sum()), 1),
                           diameter_mm=[round(2 * float(v.radius.min()), 2), round(2 * float(v.radius.max()), 2)]))
    mimics.append(dict(kind="venous sinus", name="superior sagittal / transverse sinus (anatomy labels)"))
    mimics.append(dict(kind="air-tissue susceptibility", dropout=round(acq.dropout, 3),
                       length_mm=round(acq.dropout_len, 2), distortion_mm=round(acq.distortion_mm, 2),
                       distortion_direction=_r(e_pat, 4),
                       phase_wrap_bands=acq.technique in ("swi-pm", "swip", "venbold")))
    if acq.ghost_amp > 0:
        mimics.append(dict(kind="motion ghost", amplitude=round(acq.ghost_amp, 3), axis=acq.pe_dir,
                           shift_fraction=round(acq.ghost_shift, 3)))
    names = {str(k): v[1] for k, v in anatomy.LABELS.items() if k not in (30, 31)}
    names.update({str(k): v for k, v in C.EXTRA_LABELS.items()})
    truth = dict(
        task="cmb", seed=seed, generator_version=GENERATOR_VERSION, vendor=style["manufacturer"],
        model=style["model"], technique=acq.technique, field_t=acq.field_t, te_ms=acq.te_ms, te_eff_ms=acq.te_eff_ms,
        slice_thickness=acq.thickness, slice_spacing=acq.spacing, pixel_spacing=acq.pixel_spacing,
        tilt_deg=round(acq.tilt_deg, 3), atrophy=round(pl["atrophy"], 4), pattern=pl["pattern"],
        count=count, grade=B.grade(count), planned_count=pl["count"], microbleeds=mbs, mimics=mimics,
        sop_uids=sops,
        slice_order="ascending along the slice normal (inferior to superior); index k <-> sop_uids[k]",
        label_names=names,
        acquisition=dict(
            n_slices=int(img.shape[0]), rows=int(img.shape[1]), cols=int(img.shape[2]), matrix=acq.matrix,
            series_description=style["description"], image_type=style["image_type"], sequence=style["sequence"],
            coil=style["coil"], tr_ms=acq.tr_ms, flip_deg=acq.flip_deg, n_echoes=acq.n_echoes,
            te_first_ms=acq.te_first_ms, phase_mask_power=acq.pm_power if acq.technique != "swan" else None,
            pe_dir=acq.pe_dir, partial_fourier=acq.pf, apodisation=round(acq.apod, 3), snr_wm=round(acq.snr, 2),
            bias_strength=round(acq.bias_strength, 3), ghost_amp=round(acq.ghost_amp, 3),
            bloom_factor=acq.bloom_factor, dipole=round(acq.dipole, 3), core_signal=round(acq.core_signal, 3),
            vein_widen=round(acq.vein_widen, 3), vein_contrast=cinfo["vein_contrast"],
            artery_dark=round(acq.artery_dark, 3), pose_deg=_r(acq.pose_deg), bits_stored=style["bits"],
            rescale_slope=round(style["slope"], 6), small=small, **fin),
        tissue_signal=cinfo["lut"], anatomy=ph.info,
    )
    np.savez_compressed(case / "truth.npz", labels=labels)
    truth["seconds"] = dict(total=round(time.time() - t0, 2), anatomy_vessels=round(t_geo - t0, 2),
                            image=round(t_img - t_geo, 2))
    (case / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def _describe(tr: dict) -> str:
    q = tr["acquisition"]
    return (f"cmb_{tr['seed']}: {tr['count']} bleeds (grade {tr['grade']}, {tr['pattern']}), {tr['vendor']} "
            f"{tr['technique']} {tr['field_t']:g} T TE {tr['te_eff_ms']:g}, {tr['slice_thickness']:g}/"
            f"{tr['slice_spacing']:g} mm, {q['n_slices']}x{q['rows']}x{q['cols']}, tilt {tr['tilt_deg']:.0f}, "
            f"{tr['seconds']['total']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    return cli.run(argv, "devset.build_swi", __doc__, SEED_BASE, "tiny fast cases (128x128, 2.5 mm, a ~40 mm slab)",
                   build_case, _describe)


if __name__ == "__main__":
    sys.exit(main())
