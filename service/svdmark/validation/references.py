"""A site's reference readings, read from the reference folder.

What a reference folder may hold (any nesting, alongside the DICOM images of the cases):

* **DICOM SEG** files (Segmentation Storage) that reference an image series
  (ReferencedSeriesSequence). All segments together are the reference mask: for WML the lesion
  mask on the CT series (reference volume = mask voxels × physical voxel volume); for CMB the
  microbleed masks, each 26-connected component one bleed (centre = its centroid, diameter = that
  of a sphere of the same volume).
* ``points.csv``: one row per microbleed, columns ``series_uid, x, y, z`` (patient coordinates, mm,
  the image series' frame of reference) and optionally ``diameter_mm``; a row with the series UID
  and empty coordinates records a scan with no microbleed.
* ``points.json``: ``{"<series uid>": [[x, y, z], [x, y, z, diameter_mm], {"center_mm": [x, y, z],
  "diameter_mm": d}, ...], ...}`` (an empty list: no microbleed).
* ``reference.csv``: one row per series, ``series_uid`` and ``wml_ml`` and/or ``cmb_count``.

When one series has several references the richest is used: a mask, then points, then a value.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SvdmarkError

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
VALUE_FILE = "reference.csv"
POINT_FILES = ("points.csv", "points.json")
_RANK = {"mask": 3, "points": 2, "value": 1}


class BadReference(SvdmarkError):
    """A reference file that cannot be used (named, with the reason)."""


@dataclass
class Reference:
    series_uid: str
    kind: str  # "mask" | "points" | "value"
    source: str  # the file it came from
    wml_ml: float | None = None
    cmb_count: int | None = None
    points: list[tuple[tuple[float, float, float], float | None]] = field(default_factory=list)
    seg_path: Path | None = None

    @property
    def has_locations(self) -> bool:
        return self.kind in ("mask", "points")

    def unusable_for(self, task: str) -> str | None:
        """Why this reference cannot judge a ``task`` ("wml" or "cmb") model, or None when it can: a mask judges
        either, points only microbleeds, a value row only the task whose column it fills."""
        if task == "wml" and self.kind == "points":
            return f"{self.source}: points are microbleed references, not WML, for series {self.series_uid}"
        if self.kind == "value" and (self.wml_ml if task == "wml" else self.cmb_count) is None:
            return f"{self.source}: no {'wml_ml' if task == 'wml' else 'cmb_count'} for series {self.series_uid}"
        return None


@dataclass
class ReferenceSet:
    by_series: dict[str, Reference]
    files: set[str]  # every file read as a reference (not an image)
    problems: list[dict]  # {"file":, "reason":}


def read(root: Path, candidates: list[str] = ()) -> ReferenceSet:
    """All references under ``root``. ``candidates``: files the image scan could not use (maybe SEGs)."""
    root = Path(root)
    refs: dict[str, Reference] = {}
    files: set[str] = set()
    problems: list[dict] = []

    def keep(ref: Reference) -> None:
        have = refs.get(ref.series_uid)
        if have is None or _RANK[ref.kind] > _RANK[have.kind]:
            refs[ref.series_uid] = ref
        elif _RANK[ref.kind] == _RANK[have.kind] and have.kind != "points":
            problems.append({"file": ref.source, "reason": f"second {ref.kind} reference for series"
                             f" {ref.series_uid} (first: {have.source}); the first is used"})
        elif ref.kind == "points" and have.kind == "points" and have.source != ref.source:
            problems.append({"file": ref.source, "reason": f"points for series {ref.series_uid} also in"
                             f" {have.source}; only those are used"})

    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        name = path.name.lower()
        try:
            if name == VALUE_FILE:
                files.add(str(path))
                for ref in _read_values(path):
                    keep(ref)
            elif name == "points.csv":
                files.add(str(path))
                for ref in _read_points_csv(path):
                    keep(ref)
            elif name == "points.json":
                files.add(str(path))
                for ref in _read_points_json(path):
                    keep(ref)
        except BadReference as exc:
            problems.append({"file": str(path), "reason": str(exc)})
    for f in candidates:
        ref = _read_seg_header(Path(f))
        if ref is not None:
            files.add(str(f))
            keep(ref)
    return ReferenceSet(refs, files, problems)


# --------------------------------------------------------------------------- tables
def _rows(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise BadReference(f"{path}: empty table")
            return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadReference(f"{path}: cannot read: {exc}") from None


def _number(text: str, what: str, path: Path, line: int) -> float:
    """A finite number; a coordinate of any sign, a diameter above 0 (as in points.json), anything else 0 or more."""
    try:
        v = float(text)
    except ValueError:
        raise BadReference(f"{path} line {line}: {what} {text!r} is not a number") from None
    if not math.isfinite(v) or v < 0 and what != "coordinate" or v == 0 and what == "diameter_mm":
        raise BadReference(f"{path} line {line}: {what} {text!r} is out of range")
    return v


def _read_values(path: Path) -> list[Reference]:
    rows = _rows(path)
    if rows and "series_uid" not in rows[0]:
        raise BadReference(f"{path}: needs a 'series_uid' column (have: {', '.join(rows[0])})")
    if rows and not ({"wml_ml", "cmb_count"} & set(rows[0])):
        raise BadReference(f"{path}: needs a 'wml_ml' or 'cmb_count' column (have: {', '.join(rows[0])})")
    out = []
    for n, row in enumerate(rows, start=2):
        uid = row.get("series_uid", "")
        if not uid:
            continue
        wml = row.get("wml_ml", "")
        cmb = row.get("cmb_count", "")
        ref = Reference(uid, "value", str(path))
        if wml:
            ref.wml_ml = _number(wml, "wml_ml", path, n)
        if cmb:
            c = _number(cmb, "cmb_count", path, n)
            if c != int(c):
                raise BadReference(f"{path} line {n}: cmb_count {cmb!r} is not a whole number")
            ref.cmb_count = int(c)
        if ref.wml_ml is None and ref.cmb_count is None:
            continue
        out.append(ref)
    return out


def _read_points_csv(path: Path) -> list[Reference]:
    rows = _rows(path)
    need = {"series_uid", "x", "y", "z"}
    if rows and not need <= set(rows[0]):
        raise BadReference(f"{path}: needs columns series_uid, x, y, z (patient mm) and optionally diameter_mm")
    by: dict[str, Reference] = {}
    for n, row in enumerate(rows, start=2):
        uid = row["series_uid"]
        if not uid:
            continue
        ref = by.setdefault(uid, Reference(uid, "points", str(path)))
        if not (row["x"] or row["y"] or row["z"]):
            continue  # a scan with no microbleed
        xyz = tuple(_number(row[a], "coordinate", path, n) for a in ("x", "y", "z"))
        d = row.get("diameter_mm", "")
        ref.points.append((xyz, _number(d, "diameter_mm", path, n) if d else None))
    for ref in by.values():
        ref.cmb_count = len(ref.points)
    return list(by.values())


def _read_points_json(path: Path) -> list[Reference]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadReference(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise BadReference(f"{path}: expected an object mapping series UID to a list of points")
    out = []
    for uid, pts in data.items():
        if not isinstance(pts, list):
            raise BadReference(f"{path}: series {uid}: expected a list of points")
        ref = Reference(str(uid), "points", str(path))
        for p in pts:
            if isinstance(p, dict):
                xyz, d = p.get("center_mm") or [p.get("x"), p.get("y"), p.get("z")], p.get("diameter_mm")
            elif isinstance(p, (list, tuple)) and len(p) in (3, 4):
                xyz, d = p[:3], (p[3] if len(p) == 4 else None)
            else:
                raise BadReference(f"{path}: series {uid}: point {p!r} is not [x, y, z] or [x, y, z, d]")
            try:
                centre, diameter = tuple(float(v) for v in xyz), float(d) if d is not None else None
            except (TypeError, ValueError):
                raise BadReference(f"{path}: series {uid}: point {p!r} has a non-numeric value") from None
            if len(centre) != 3 or not all(math.isfinite(v) for v in centre):
                raise BadReference(f"{path}: series {uid}: point {p!r} needs three finite coordinates (x, y, z in mm)")
            if diameter is not None and not (math.isfinite(diameter) and diameter > 0):
                raise BadReference(f"{path}: series {uid}: point {p!r} has a diameter that is not a positive number")
            ref.points.append((centre, diameter))
        ref.cmb_count = len(ref.points)
        out.append(ref)
    return out


# --------------------------------------------------------------------------- DICOM SEG
def _read_seg_header(path: Path) -> Reference | None:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # not DICOM at all: not a reference either
        return None
    if str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS:
        return None
    try:
        uid = str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID)
    except (AttributeError, IndexError):
        return None
    return Reference(uid, "mask", str(path), seg_path=path)


def seg_mask(path: Path, volume) -> np.ndarray:
    """The SEG's mask (all segments together) on ``volume``'s grid, slice k ↔ ``volume.frames[k]``."""
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    frames = volume.frames
    try:
        if all(f.frame_number is None for f in frames):
            arr = seg.get_pixels_by_source_instance(
                [f.sop_instance_uid for f in frames], combine_segments=True, relabel=True,
                assert_missing_frames_are_empty=True, skip_overlap_checks=True)
        else:
            uids = {f.sop_instance_uid for f in frames}
            if len(uids) != 1:
                raise BadReference(f"{path}: the image series mixes multi-frame instances; not supported")
            arr = seg.get_pixels_by_source_frame(
                frames[0].sop_instance_uid, [int(f.frame_number) for f in frames], combine_segments=True,
                relabel=True, assert_missing_frames_are_empty=True, skip_overlap_checks=True)
    except (ValueError, KeyError, AttributeError, IndexError) as exc:
        raise BadReference(f"{path}: cannot place the segmentation on its image series: {exc}") from None
    mask = (np.asarray(arr) > 0).astype(np.uint8)
    if mask.shape != volume.shape:
        raise BadReference(f"{path}: segmentation shape {mask.shape} differs from the image's {volume.shape}")
    return mask


def mask_bleeds(mask: np.ndarray, volume) -> list[tuple[tuple[float, float, float], float]]:
    """Each 26-connected component of a CMB mask as (centre in patient mm, equivalent-sphere diameter mm)."""
    from scipy import ndimage as ndi

    labels, n = ndi.label(mask > 0, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return []
    idx = np.arange(1, n + 1)
    centres = ndi.center_of_mass(np.ones_like(labels, dtype=np.uint8), labels, idx)
    sizes = ndi.sum_labels(np.ones_like(labels, dtype=np.uint8), labels, idx)
    out = []
    for (k, i, j), size in zip(centres, sizes):
        vol_mm3 = float(size) * volume.voxel_volume_mm3
        d = (6.0 * vol_mm3 / math.pi) ** (1.0 / 3.0)
        out.append((tuple(float(v) for v in volume.index_to_patient(k, i, j)), d))
    return out
