"""Entry point: one randomised NCCT head with its truth maps, as a ``svdmark_phantom.types.Phantom``.

The order of work: draw the lesion load and contrast, build the anatomy (label map through a random warp), draw
the lesions on it, draw the tissue densities and render the noiseless density volume, place the head in the
scanner, sample the thick slices and apply the scanner's degradations. Each step has its own random stream
spawned from ``np.random.default_rng(seed)``, so one seed gives the same bytes whatever the other arguments do to
the later steps' consumption of random numbers.
"""
from __future__ import annotations

import numpy as np

from svdmark_phantom.types import Phantom, SeriesKind

from . import labels, lesions, render, scanner
from .fields import Grid

GENERATOR = "synth_ct/1"


def make_ncct(seed: int, *, matrix: int = 256, slice_thickness: float = 5.0, gantry_tilt_deg: float = 0.0,
              wml_ml: float | None = None, small: bool = False) -> Phantom:
    """A randomised non-contrast head CT with per-voxel lesion and white-matter occupancy.

    ``wml_ml=None`` draws a load (a quarter lesion-free, then 0.05-1, 1-10, 10-50 mL); ``small=True`` gives a
    64 x 64 x 6 slab through the lateral ventricles on a 3 mm anatomy grid, for tests.
    """
    seed = int(seed)
    if slice_thickness <= 0:
        raise ValueError("slice_thickness must be positive")
    r_load, r_anat, r_les, r_tis, r_place, r_scan = np.random.default_rng(seed).spawn(6)
    if small:
        matrix = 64
    grid = Grid(3.0 if small else 1.0)
    contrast = lesions.draw_contrast_hu(r_load)  # first: a seed's contrast is the same whether a load is given
    load = lesions.draw_load_ml(r_load) if wml_ml is None else max(float(wml_ml), 0.0)

    anat = labels.build(r_anat, grid)
    pl, pinfo = scanner.place(r_place, anat)
    det = float(np.prod(pl.scale))
    crop, occ, deficit, linfo = lesions.build(r_les, anat, load * 1000.0 / det, contrast, load)
    anat.src = anat.d_v = anat.d_ctx = None  # the warp and distance maps are no longer needed
    tissues = render.draw_tissues(r_tis)
    drawn = contrast
    if crop is not None:  # no lesion as dark as the CSF it borders
        deficit, contrast = lesions.cap_density(deficit, occ, tissues["white_matter"],
                                                max(tissues["csf"], tissues["ventricle"]))
    hu, wm, occ_w, wcrop, clouds = render.canonical_volumes(r_tis, anat, tissues, crop, occ, deficit)
    del occ, deficit
    geom = scanner.plan(r_place, anat, pl, int(matrix), float(slice_thickness), float(gantry_tilt_deg), small)
    info = anat.info
    del anat
    image, wm_frac, wml_frac, sinfo = scanner.acquire(r_scan, grid, pl, geom, hu, wm, occ_w, wcrop, clouds,
                                                       small)
    del hu, wm, occ_w

    vox_mm3 = geom.pixel * geom.pixel * geom.spacing
    truth_ml = float(wml_frac.sum(dtype=np.float64)) * vox_mm3 / 1000.0
    meta = {
        "generator": GENERATOR,
        "seed": seed,
        "small": bool(small),
        "wml_ml_requested": round(load, 4),
        "wml_contrast_hu": round(contrast, 3),
        "wml_contrast_drawn_hu": round(drawn, 3),
        "tissue_hu": tissues,
        "atrophy": info["atrophy"],
        "lesion_patterns": linfo["patterns"],
        "lesion_details": linfo.get("pattern_details", {}),
        "lesion_core_darkening": linfo.get("core_darkening", 0.0),
        "anatomy": {k: v for k, v in info.items() if k not in ("atrophy", "icv_centre_mm")},
        "placement": pinfo,
        "scanner": {"pixel_mm": round(geom.pixel, 4), "fov_mm": round(geom.pixel * geom.matrix, 2),
                    "matrix": int(geom.matrix), "slices": int(geom.n), **sinfo},
        "anatomy_grid_mm": grid.h,
    }
    return Phantom(
        image=image,
        pixel_spacing=(float(geom.pixel), float(geom.pixel)),
        positions=geom.positions.astype(np.float64),
        row_direction=tuple(float(x) for x in geom.row),
        column_direction=tuple(float(x) for x in geom.col),
        frame_of_reference_uid="2.25." + str(int.from_bytes(np.random.SeedSequence([seed, 0xF0F]).generate_state(
            4, np.uint32).tobytes(), "big")),
        slice_thickness=float(slice_thickness),
        truth_mask=(wml_frac >= 0.5).astype(np.uint8),
        truth_wml_ml=truth_ml,
        microbleeds=(),
        modality="CT",
        kind=SeriesKind.NCCT,
        seed=seed,
        spacing_between_slices=float(geom.spacing),
        gantry_tilt_deg=float(gantry_tilt_deg),
        meta=meta,
        aux={"wml_fraction": wml_frac, "wm_fraction": wm_frac},
    )
