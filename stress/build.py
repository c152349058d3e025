"""Build stress cases: ``python -m stress.build --task wml|cmb --n N --out DIR [--start 0] [--small]``.

Each case is ``DIR/<task>_<seed>/`` with ``dicom/*.dcm`` (one series), ``truth.json`` and ``truth.npz``.
Seeds are ``BASE_SEED[task] + i``; a case depends only on its seed (and ``--small``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from . import STRESS_VERSION
from . import anatomy as A
from . import dicomio as D
from . import lesions as LZ
from . import scanner as S

BASE_SEED = {"wml": 7_310_000, "cmb": 7_320_000}


def _grade(n: int) -> int:
    return 0 if n == 0 else 1 if n < 10 else 2 if n <= 30 else 3


def _pose_json(pose: S.Pose) -> dict:
    return {"R": pose.R.round(8).tolist(), "t": pose.t.round(6).tolist()}


def _acq_json(acq: S.Acquisition) -> dict:
    return {"rows": acq.rows, "cols": acq.cols, "pixel_spacing": list(acq.spacing), "thickness": acq.thickness,
            "plane_spacing": round(acq.plane_spacing, 6), "tilt_deg": round(acq.tilt_deg, 3), "tilt_style": acq.tilt_style,
            "row_dir": acq.row_dir.tolist(), "col_dir": acq.col_dir.tolist(), "n_slices": len(acq.positions),
            "first_position": acq.positions[0].tolist(), "last_position": acq.positions[-1].tolist()}


# --------------------------------------------------------------------------- WML / NCCT


def build_wml_case(seed: int, out: Path, small: bool = False) -> dict:
    t0 = time.time()
    rng = np.random.default_rng(seed)
    atrophy = float(np.clip(rng.beta(1.6, 1.6), 0, 1))
    age = int(58 + 32 * atrophy + rng.integers(-4, 5))
    grid = A.WorldGrid.default(1.0)
    head = A.build_head(rng, atrophy, grid)
    mimics = LZ.add_mimics(head, rng, "ct")
    target = LZ.sample_wml_load(rng) if not small else 6.0
    wml = LZ.build_wml(head, rng, target)
    fine_ml = LZ.fine_volume_ml(wml.L, grid) if wml.L is not None else 0.0
    hu_world, ct_info = S.ct_world(head, rng, wml.L)
    if wml.L is not None:
        head.labels[wml.L > 0] = A.WML

    vendor = str(rng.choice(list(D.CT_VENDORS)))
    vs = D.CT_VENDORS[vendor]
    thk = float(rng.choice([0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 4.0, 5.0], p=[.07, .07, .08, .08, .16, .16, .16, .22]))
    tilted = rng.uniform() < 0.45
    tilt = float(rng.uniform(8, 25)) * float(rng.choice([-1, 1])) if tilted else 0.0
    style = ("sheared" if rng.uniform() < 0.75 else "normal") if tilted else "none"
    kernel = str(rng.choice(list(S.CT_KERNELS), p=[0.4, 0.45, 0.15]))
    matrix = 512 if rng.uniform() < 0.85 else 384
    fov = float(rng.uniform(210, 250))
    if small:
        thk, matrix, fov = 5.0, 128, 240.0
    pose = S.random_pose(rng, pitch_deg=10.0)
    acq = S.make_acquisition(pose, fov=fov, matrix=matrix, thickness=thk, spacing=None, tilt_deg=abs(tilt) * np.sign(tilt or 1),
                             tilt_style=style, head_z_range=(-52 - rng.uniform(0, 12), 84))
    offs, w = S.profile(thk, 0.5, "trapezoid")
    hu = S.sample(acq, pose, grid, hu_world, 1, offs, w, cval=-1000.0)
    del hu_world
    # truth: occupancy of the voxel cell (plane spacing along the normal) by {L > 0}
    if wml.L is not None:
        cs = acq.plane_spacing
        n_t = max(2, int(math.ceil(cs / 0.4)))
        toffs = (np.arange(n_t) + 0.5) / n_t * cs - cs / 2
        inpl = ((0.0, 0.0),) if acq.spacing[0] <= 0.6 else ((-.25, -.25), (-.25, .25), (.25, -.25), (.25, .25))
        frac = S.sample(acq, pose, grid, wml.L, 1, toffs, np.ones(n_t), inpl, cval=-50.0, transform=lambda v: v > 0)
    else:
        frac = np.zeros(hu.shape, np.float32)
    labels = S.sample(acq, pose, grid, head.labels, 0, [0.0], [1.0], cval=0, dtype=np.uint8)
    # kernel, noise, streaks
    sig_mm, fc = S.CT_KERNELS[kernel]
    px = acq.spacing[0]
    sd5 = rng.uniform(2.5, 4.5)
    noise_sd = float(np.clip(sd5 * math.sqrt(5.0 / thk), 2.0, 14.0))
    nrng = np.random.default_rng(seed + 99991)
    mid = np.array([(acq.rows - 1) / 2 * acq.spacing[0], (acq.cols - 1) / 2 * acq.spacing[1]])
    for k in range(hu.shape[0]):
        sl = ndi.gaussian_filter(hu[k], sig_mm / px)
        centre = acq.positions[k] + mid[0] * acq.col_dir + mid[1] * acq.row_dir
        z_head = float(pose.to_head(centre)[2])
        base_w = float(1.0 / (1.0 + np.exp((z_head + 22.0) / 5.0)))  # skull base below ~ -22 mm
        sl = sl + noise_sd * (1 + 0.8 * base_w) * S.ct_noise(nrng, sl.shape, px, fc) + S.ct_streaks(nrng, sl, px, base_w)
        hu[k] = sl
    hu = np.clip(hu, -1024, 3071)
    slope, icpt, signed = 1.0, vs["intercept"], vs["signed"]
    stored = np.round((hu - icpt) / slope)
    lo, hi = (-32768, 32767) if signed else (0, 65535)
    stored = np.clip(stored, lo, hi)
    thk_txt = f"{thk:g}"
    desc = vs["desc"].format(thk=thk_txt, kernel=vs["kernels"][kernel])
    extra = {
        "SeriesDescription": desc, "ProtocolName": vs["protocol"], "Manufacturer": vs["Manufacturer"],
        "ManufacturerModelName": vs["ManufacturerModelName"], "ImageType": vs["image_type"],
        "ConvolutionKernel": vs["kernels"][kernel], "GantryDetectorTilt": D._ds(acq.tilt_deg, 2),
        "KVP": "120", "XRayTubeCurrent": int(rng.integers(180, 320)), "SeriesNumber": int(rng.integers(2, 9)),
        "WindowCenter": "40", "WindowWidth": "80", "_ts": vs["ts"],
    }
    if vs["body"]:
        extra["BodyPartExamined"] = vs["body"]
    study = D.study_info(rng, "wml", seed, age)
    series_uid = D.uid("wml", seed, "series")
    case = out / f"wml_{seed}"
    uids = D.write_series(case / "dicom", modality="CT", vendor=vendor, stored=list(stored), acq=acq, study=study,
                          series_uid=series_uid, slope=slope, intercept=icpt, signed=signed, extra=extra, seed=seed)
    vox = acq.voxel_ml
    truth = {
        "task": "wml", "stress_version": STRESS_VERSION, "seed": seed, "study_uid": study["study_uid"],
        "series_uid": series_uid, "sop_uids": uids, "vendor": vendor, "kernel": vs["kernels"][kernel],
        "kernel_class": kernel, "slice_thickness": thk, "tilt_deg": round(abs(acq.tilt_deg), 3), "tilt_style": style,
        "atrophy": round(atrophy, 4), "age": age,
        "wml_ml": round(float(frac.sum() * vox), 5),
        "wml_mask_ml": round(float((frac >= 0.5).sum() * vox), 5),
        "wml_world_ml": round(wml.world_ml, 5), "wml_world_fine_ml": round(fine_ml, 5), "wml_target_ml": round(target, 4),
        "phenotype": wml.phenotype, "wml_components": wml.components, "mimics": mimics,
        "noise_sd_hu": round(noise_sd, 3), "ct": {k: round(float(v), 3) for k, v in ct_info.items()},
        "acquisition": _acq_json(acq), "pose": _pose_json(pose), "head": head.params,
        "seconds": None,
    }
    np.savez_compressed(case / "truth.npz", fraction=frac.astype(np.float16), labels=labels)
    truth["seconds"] = round(time.time() - t0, 2)
    (case / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


# --------------------------------------------------------------------------- CMB / SWI


def build_cmb_case(seed: int, out: Path, small: bool = False) -> dict:
    t0 = time.time()
    rng = np.random.default_rng(seed)
    atrophy = float(np.clip(rng.beta(1.6, 1.6), 0, 1))
    age = int(58 + 32 * atrophy + rng.integers(-4, 5))
    grid = A.WorldGrid.default(1.0)
    head = A.build_head(rng, atrophy, grid)
    mimics = LZ.add_mimics(head, rng, "swi")
    veins = LZ.vein_points(head, rng)
    occ = LZ.render_veins(head, veins)
    n = LZ.sample_cmb_count(rng) if not small else 6
    bleeds = LZ.place_bleeds(head, rng, n, veins)
    field_t = float(rng.choice([1.5, 3.0], p=[0.4, 0.6]))
    img_world, swi_info = S.swi_world(head, rng, occ, field_t)
    head.labels[(occ > 0.4) & np.isin(head.labels, A.BRAIN + (A.SAS, A.VENT))] = A.VEIN
    del occ

    vendor = str(rng.choice(list(D.MR_VENDORS)))
    vs = D.MR_VENDORS[vendor]
    thk = float(rng.choice([0.8, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0], p=[.1, .15, .15, .2, .2, .12, .08]))
    spacing = thk / 2 if (vendor == "ge" and rng.uniform() < 0.6) else thk  # SWAN: overlapping slices
    matrix = int(rng.choice([256, 320, 384], p=[0.35, 0.35, 0.3]))
    fov = float(rng.uniform(210, 240))
    oblique = float(rng.uniform(-15, 15)) if rng.uniform() < 0.5 else 0.0
    if small:
        thk, spacing, matrix, fov = 2.0, 2.0, 128, 230.0
    pose = S.random_pose(rng, pitch_deg=8.0)
    acq = S.make_acquisition(pose, fov=fov, matrix=matrix, thickness=thk, spacing=spacing, tilt_deg=0.0,
                             tilt_style="none", head_z_range=(-48 - rng.uniform(0, 10), 78), oblique_deg=oblique)
    offs, w = S.profile(thk, 0.5, "rect")
    img = S.sample(acq, pose, grid, img_world, 1, offs, w, cval=0.0)
    del img_world
    fac, centres = S.bleed_attenuation(acq, pose, bleeds, offs, w, rng)
    img *= fac
    labels = S.sample(acq, pose, grid, head.labels, 0, [0.0], [1.0], cval=0, dtype=np.uint8)
    # coil bias, Rician noise
    n_sl = img.shape[0]
    kk, ii, jj = np.meshgrid(np.linspace(-1, 1, n_sl), np.linspace(-1, 1, acq.rows), np.linspace(-1, 1, acq.cols),
                             indexing="ij", sparse=True)
    c = rng.uniform(-1, 1, 6)
    bias = 1 + 0.12 * (c[0] * ii + c[1] * jj + c[2] * kk) + 0.1 * c[3] * (ii ** 2 + jj ** 2) + 0.06 * c[4] * ii * jj
    img *= np.clip(bias, 0.6, 1.4).astype(np.float32)
    snr = float(rng.uniform(11, 18) if field_t < 2 else rng.uniform(18, 34))
    sigma = 1.0 / snr
    nrng = np.random.default_rng(seed + 77777)
    re = img + sigma * nrng.standard_normal(img.shape, dtype=np.float32)
    im = sigma * nrng.standard_normal(img.shape, dtype=np.float32)
    img = np.sqrt(re * re + im * im)
    del re, im
    scale = float(rng.uniform(450, 1100))
    slope = None
    value = img * scale
    if vs["slope"] is not None:
        slope = vs["slope"][0]
        value = value / slope
    stored = np.clip(np.round(value), 0, 4095)
    extra = {
        "SeriesDescription": vs["desc"], "ProtocolName": vs["protocol"].format(thk=f"{thk:g}"),
        "Manufacturer": vs["Manufacturer"], "ManufacturerModelName": vs["model"][field_t], "ImageType": vs["image_type"],
        "SequenceName": vs["seq"], "MagneticFieldStrength": f"{field_t:g}", "EchoTime": "20" if field_t > 2 else "40",
        "RepetitionTime": "28" if field_t > 2 else "49", "FlipAngle": "15", "MRAcquisitionType": "3D",
        "ScanningSequence": "GR", "SequenceVariant": "SP", "SpacingBetweenSlices": D._ds(spacing, 4),
        "BodyPartExamined": "BRAIN" if vendor != "canon" else "HEAD", "SeriesNumber": int(rng.integers(5, 19)),
        "_ts": vs["ts"],
    }
    study = D.study_info(rng, "cmb", seed, age)
    series_uid = D.uid("cmb", seed, "series")
    case = out / f"cmb_{seed}"
    uids = D.write_series(case / "dicom", modality="MR", vendor=vendor, stored=list(stored), acq=acq, study=study,
                          series_uid=series_uid, slope=slope, intercept=0.0, signed=0, extra=extra, seed=seed)
    truth = {
        "task": "cmb", "stress_version": STRESS_VERSION, "seed": seed, "study_uid": study["study_uid"],
        "series_uid": series_uid, "sop_uids": uids, "vendor": vendor, "field_t": field_t, "snr": round(snr, 2),
        "slice_thickness": thk, "slice_spacing": spacing, "oblique_deg": round(oblique, 3), "tilt_deg": 0.0,
        "atrophy": round(atrophy, 4), "age": age, "count": len(bleeds), "grade": _grade(len(bleeds)),
        "microbleeds": [
            {"center_mm": [round(float(v), 3) for v in cpat], "diameter_mm": round(b.diameter, 3), "location": b.location,
             "tags": list(b.tags), "center_index_kij": [round(float(v), 3) for v in S.patient_to_index(acq, cpat)]}
            for b, cpat in zip(bleeds, centres)
        ],
        "mimics": mimics, "swi": {k: round(float(v), 4) for k, v in swi_info.items()},
        "acquisition": _acq_json(acq), "pose": _pose_json(pose), "head": head.params,
        "world_grid": {"origin": grid.origin.tolist(), "h": grid.h, "shape": list(grid.shape)},
    }
    np.savez_compressed(case / "truth.npz", labels=labels, world_labels=head.labels)
    truth["seconds"] = round(time.time() - t0, 2)
    (case / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def build(task: str, n: int, out: Path, start: int = 0, small: bool = False) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    fn = build_wml_case if task == "wml" else build_cmb_case
    res = []
    for i in range(start, start + n):
        seed = BASE_SEED[task] + i
        t = fn(seed, out, small)
        res.append(t)
        if task == "wml":
            what = f"WML {t['wml_ml']:.2f} mL ({t['phenotype']})"
        else:
            what = f"{t['count']} CMB"
        print(f"{task}_{seed}: {what}, {t['vendor']}, {t['slice_thickness']:g} mm, tilt {t['tilt_deg']:.1f}, "
              f"atrophy {t['atrophy']:.2f}, {t['acquisition']['n_slices']} slices, {t['seconds']:.1f} s", flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stress.build", description=__doc__)
    ap.add_argument("--task", choices=["wml", "cmb"], required=True)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--start", type=int, default=0, help="first case index (seed = base + index)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--small", action="store_true", help="tiny 2 mm world, 128 matrix (tests only)")
    a = ap.parse_args(argv)
    t0 = time.time()
    build(a.task, a.n, a.out, a.start, a.small)
    print(f"built {a.n} {a.task} cases in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
