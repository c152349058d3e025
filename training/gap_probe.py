"""Does a head's white-matter/CSF gap cause a WML model's false millilitres? Read each head as it is and with the gap
stretched to at least ``--gap`` HU.

On `choose`, 1.12.0's off-lesion millilitres concentrate in heads whose CSF lies within 16 HU of white matter
(``training.false_ml``), but training with such heads (wml-ncct 1.18.0, 1.18.1) did not lower them. This asks the
question at inference instead: the head's HU between its CSF level and its white matter are stretched linearly so
that the gap is at least ``--gap`` (white matter and everything above it unchanged; below the CSF level shifted by
the same amount), and the head is read again. The levels come either from the development set's drawn tissue values
(``oracle``) or from the image (``estimate``: ``tissue_levels``), the latter being what a service could do. A
stretch also deepens every lesion between the two levels by the same factor, so lesion reads can move too; the
figures say by how much. Development cases only (``devcases``); nothing is chosen here.

    PYTHONPATH=.:service .venv/bin/python -m training.gap_probe --data /work/dev_data/choose --gap 22 \\
        --out training/runs/gap_probe_choose.json
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
from scipy import ndimage

from . import devcases
from .augment import white_matter_level
from .compare import WmlReading, wml_figures
from .evaluate import target_score
from .insertion_probe import model_reader, reader_parser

BONE_HU = 150.0
RIM_MM = 3.0  # intracranial voxels this close to bone are left out (partial volume with the skull)
CSF_BELOW_WM_HU = 8.0  # the CSF level is looked for this far below white matter and lower
ERODE_MM = 2.0  # interiors of the dark regions: partial volume at their edges left out


def intracranial(array: np.ndarray, spacing_mm) -> np.ndarray:
    """Voxels enclosed by each slice's skull ring, at least ``RIM_MM`` from bone (slices without a closed ring:
    none)."""
    out = np.zeros(array.shape, bool)
    it = max(1, int(round(RIM_MM / float(spacing_mm[0]))))
    for k, sl in enumerate(array):
        bone = sl > BONE_HU
        if bone.any():
            out[k] = ndimage.binary_fill_holes(bone) & ~ndimage.binary_dilation(bone, iterations=it)
    return out


def in_plane(connectivity: int) -> np.ndarray:
    """A 3x3x3 structuring element that reaches the slice's own neighbours only (4- or 8-connected: 1 or 2)."""
    st = np.zeros((3, 3, 3), bool)
    st[1] = ndimage.generate_binary_structure(2, connectivity)
    return st


def tissue_levels(array: np.ndarray, spacing_mm, inside: np.ndarray | None = None) -> tuple[float, float] | None:
    """(white matter, CSF) HU of a head from its image. White matter: the mode of the in-plane smoothed (1 mm)
    intracranial histogram in 15-42 HU. CSF: the lower quartile of the interiors (eroded by ``ERODE_MM`` in-plane) of
    the regions more than ``CSF_BELOW_WM_HU`` darker than white matter, ventricles and sulci first (the histogram's
    own mode there sits on white matter's partial-volume tail, not on CSF). None without enough of either.
    ``inside``: the head's :func:`intracranial` mask where the caller has it already."""
    sig = 1.0 / float(spacing_mm[0])
    sm = ndimage.gaussian_filter(array.astype(np.float32), (0, sig, sig))
    inside = intracranial(array, spacing_mm) if inside is None else inside
    wm = white_matter_level(sm[inside], 15.0, 42.0, min_voxels=1000)
    if wm is None:
        return None
    dark = inside & (sm < wm - CSF_BELOW_WM_HU) & (sm > -20.0)
    core = ndimage.binary_erosion(dark, in_plane(1), iterations=max(1, int(round(ERODE_MM / float(spacing_mm[0])))))
    if core.sum() < 200:
        return None
    return wm, float(np.percentile(sm[core], 25))


@dataclasses.dataclass(frozen=True)
class SmoothedHead:
    """A head's image smoothed in-plane as a reader squints (``smooth_mm``), its intracranial mask and its levels."""

    smooth: np.ndarray
    inside: np.ndarray
    wm: float
    csf: float


def smoothed_head(volume, smooth_mm: float = 1.5) -> SmoothedHead | None:
    """The head's :class:`SmoothedHead` (its levels from :func:`tissue_levels`); None where they are not found."""
    hu = volume.array.astype(np.float32)
    py, px = (float(v) for v in volume.pixel_spacing)
    inside = intracranial(hu, (py, px))
    levels = tissue_levels(hu, (py, px), inside)
    if levels is None:
        return None
    return SmoothedHead(ndimage.gaussian_filter(hu, (0, smooth_mm / py, smooth_mm / px)), inside, *levels)


def stretch(array: np.ndarray, wm: float, csf: float, gap: float) -> np.ndarray:
    """The head with its CSF-to-white-matter HU stretched so the gap is at least ``gap`` (monotone; white matter and
    above unchanged, below the CSF level shifted)."""
    if wm - csf >= gap:
        return array
    shift = gap - (wm - csf)
    a = array.astype(np.float32)
    return np.where(a >= wm, a, np.where(a <= csf, a - shift, wm - (wm - a) * gap / (wm - csf))).astype(np.float32)


def main(argv=None) -> None:
    ap = reader_parser(__doc__)
    ap.add_argument("--gap", type=float, default=22.0, help="stretch white matter minus CSF to at least this (HU)")
    args = ap.parse_args(argv)
    label, read = model_reader(args.models, args.threads)
    rows = []
    for case in devcases.dev_case_dirs(args.data, args.n, "wml"):
        truth, vol = devcases.read_series(case, "wml")
        ml = vol.voxel_volume_mm3 / 1000.0
        t = truth["tissue_hu"]
        est = tissue_levels(vol.array, vol.pixel_spacing)
        row = {"seed": int(truth["seed"]), "truth_ml": float(truth["wml_ml"]), "drawn_wm_csf": [t["wm"], t["csf"]],
               "estimated_wm_csf": est}
        for name, levels in (("as_is", None), ("oracle", (t["wm"], t["csf"])), ("estimate", est)):
            a = vol.array if levels is None else stretch(vol.array, *levels, args.gap)
            row[name] = float(read(dataclasses.replace(vol, array=a)).sum(dtype=np.float64) * ml)
        rows.append(row)
        e = "none" if est is None else f"{est[0]:.1f}/{est[1]:.1f}"
        print(f"  {case.name}: truth {row['truth_ml']:.2f}; read {row['as_is']:.2f}, oracle {row['oracle']:.2f}, "
              f"estimate {row['estimate']:.2f} mL (WM/CSF drawn {t['wm']:.1f}/{t['csf']:.1f}, estimated {e})",
              flush=True)
    summary = {}
    for name in ("as_is", "oracle", "estimate"):
        s = wml_figures([WmlReading(r["truth_ml"], r[name], True) for r in rows])
        summary[name] = {**s, "score": target_score(s["mae_ml"], s["mae_lt1_ml"])}
        print(f"{name:9s} MAE {s['mae_ml']:.3f}  MAE<1 {s['mae_lt1_ml']:.3f}  score {summary[name]['score']:.2f}"
              f"  lesion-free median {s['lesion_free_median_ml']:.2f}  r {s['pearson_r']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": label, "data": str(args.data), "gap_hu": args.gap, "summary": summary,
                                    "heads": rows}, indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
