"""Rebuild ``svdmark/data/anatomy/icbm2009a_cavity_3mm.npz``, the template of ``svdmark.measure.frame``.

The ICBM 2009a symmetric T1 ships (skull-stripped) inside the nilearn wheel (the ``phantom`` extra); its non-zero
voxels are the intracranial cavity. Smoothed (sigma 1.5 mm), taken every 3 mm, smoothed again (sigma 3 mm) and
stored as uint8 with its RAS affine: about 60 KB.

    PYTHONPATH=.:service .venv/bin/python -m training.anatomy_template
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage

STEP = 3
OUT = Path(__file__).resolve().parents[1] / "service" / "svdmark" / "data" / "anatomy" / "icbm2009a_cavity_3mm.npz"


def cavity_template() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 cavity 0-255 on a 3 mm grid, its index -> RAS mm affine)."""
    import nibabel as nib

    data = Path(importlib.util.find_spec("nilearn").submodule_search_locations[0]) / "datasets" / "data"
    im = nib.load(data / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    mask = (np.asarray(im.dataobj) > 0).astype(np.float32)
    coarse = ndimage.gaussian_filter(ndimage.gaussian_filter(mask, 1.5)[::STEP, ::STEP, ::STEP], 1.0)
    affine = im.affine.copy()
    affine[:3, :3] *= STEP
    return np.round(np.clip(coarse, 0, 1) * 255).astype(np.uint8), affine


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    cavity, affine = cavity_template()
    np.savez_compressed(args.out, cavity=cavity, affine=affine)
    print(args.out, cavity.shape, args.out.stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
