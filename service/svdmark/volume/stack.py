"""Series → Volume in the source grid, with geometric checks.

Slices stay as acquired (sorted along the slice normal), so a SEG frame maps
one-to-one onto a source image, including gantry-tilted CT whose grid is
sheared: ``Volume.positions`` keep every slice's exact ImagePositionPatient,
and ``Volume.voxel_volume_mm3`` measures plane spacing along the normal (``Volume.physical_ml`` each slice's
own, on an unevenly spaced stack).

Every way a stack can be untrustworthy raises ``InvalidSeries`` with one
specific sentence (which slices, where, how many).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from pydicom.pixels import apply_modality_lut

from svdmark.domain import FrameRef, Series, Volume
from svdmark.errors import InvalidSeries
from svdmark.geometry import (
    MIN_SLICES,
    ORIENTATION_TOLERANCE_DEG,
    angle_deg,
    orientation_apart_deg,
    spacing,
    unit,
)
from svdmark.volume.lossy import LOSSY_WARNING, is_lossy

if TYPE_CHECKING:  # pragma: no cover
    from pydicom import Dataset

# --------------------------------------------------------------------------- thresholds
# (the stack's own: orientation, duplicates, gaps: in svdmark.geometry, shared with completion)

#: pixel spacings (mm) that differ by more than this are "mixed"
PIXEL_SPACING_TOLERANCE_MM = 1e-3
#: in-plane drift of a slice from the line through all slice origins, in pixels
IN_PLANE_DRIFT_TOLERANCE_PX = 0.5
#: shear angle (between slice step and normal) above which the grid counts as gantry-tilted
GANTRY_TILT_WARNING_DEG = 0.5
#: SliceThickness above which partial-volume dilution is warned about
THICK_SLICE_WARNING_MM = 3.0
#: relative spread of slice spacings above which uneven spacing is warned about
UNEVEN_SPACING_WARNING = 0.1

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
LEGACY_ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.2"
LEGACY_ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.4"


@dataclass
class _Slice:
    """One 2D image (a single-frame instance or one frame of a multi-frame one)."""

    ref: FrameRef
    position: np.ndarray  # (3,)
    orientation: np.ndarray  # (6,)
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    slope: float
    intercept: float
    thickness: float | None
    frame_of_reference: str
    component: str  # "MAGNITUDE" / "PHASE" / "REAL" / "IMAGINARY" / "" (unknown)
    pixels: Callable[[], np.ndarray]
    tilt_attr: float | None = None
    padding: tuple[int, int] | None = None  # stored values outside the reconstructed image (Pixel Padding)
    acquisition: str = ""  # AcquisitionNumber of a single-frame instance ("" where absent)

    @property
    def label(self) -> str:
        if self.ref.frame_number is not None:
            return f"SOP {self.ref.sop_instance_uid} frame {self.ref.frame_number}"
        return f"SOP {self.ref.sop_instance_uid}"


# --------------------------------------------------------------------------- attribute helpers


def _uid(ds: "Dataset") -> str:
    return str(getattr(ds, "SOPInstanceUID", "") or "<no SOPInstanceUID>")


def _floats(value: Any, n: int, what: str, who: str) -> np.ndarray:
    try:
        arr = np.asarray([float(x) for x in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidSeries(f"{who}: {what} is not numeric ({value!r})") from exc
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise InvalidSeries(f"{who}: {what} must have {n} finite numbers, has {value!r}")
    return arr


def _number(item: Any, kw: str, who: str, default: float | None = None) -> float | None:
    """One finite number from a DS/IS attribute of ``item``; ``default`` when absent or empty."""
    if kw not in item or item[kw].value in (None, ""):
        return default
    value = item[kw].value
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InvalidSeries(f"{who}: {kw} is not a single number") from None  # (no value: journalled as is)
    if not np.isfinite(out):
        raise InvalidSeries(f"{who}: {kw} is {out}, not a finite number")
    return out


def _slope(item: Any, who: str) -> float:
    slope = _number(item, "RescaleSlope", who)
    if slope == 0:
        raise InvalidSeries(f"{who}: RescaleSlope is 0, which would make every pixel the same value")
    return 1.0 if slope is None else slope


def _intercept(item: Any, who: str) -> float:
    return _number(item, "RescaleIntercept", who) or 0.0


def _padding(ds: Any) -> tuple[int, int] | None:
    """The stored values (lowest, highest) that mark pixels outside the reconstructed image: Pixel Padding Value,
    up to Pixel Padding Range Limit where there is one (PS3.3 C.7.5.1.1.2), such as a CT's field-of-view circle.
    None where there are none, or the values are unusable (they are a convenience: the image is read without)."""
    try:
        value = ds.get("PixelPaddingValue")
        limit = ds.get("PixelPaddingRangeLimit")
        if value is None or value == "":
            return None
        lo = int(value)
        hi = lo if limit is None or limit == "" else int(limit)
        bits = int(ds.get("BitsAllocated") or 16)
        signed = int(ds.get("PixelRepresentation") or 0) == 1
    except Exception:  # a malformed value pydicom cannot parse (wrong length, not a number)
        return None
    lo, hi = _as_stored(lo, bits, signed), _as_stored(hi, bits, signed)
    return (min(lo, hi), max(lo, hi))


def _as_stored(value: int, bits: int, signed: bool) -> int:
    """A padding value as the pixels store it: vendors write it with the VR of the other signedness (US 63536 for
    the signed pixels' -2000, PS3.5 allows either), which as written would never match a pixel."""
    if signed and value >= 2 ** (bits - 1):
        return value - 2 ** bits
    if not signed and value < 0:
        return value + 2 ** bits
    return value


def _frame_count(ds: Any) -> int:
    value = ds.get("NumberOfFrames")
    if value in (None, ""):
        return 1
    try:
        return int(value) or 1
    except (TypeError, ValueError):
        raise InvalidSeries(f"SOP {_uid(ds)}: NumberOfFrames is not a whole number") from None


def _component(ds: Any) -> str:
    """Magnitude/phase/real/imaginary from ComplexImageComponent or ImageType."""
    cic = getattr(ds, "ComplexImageComponent", None) if "ComplexImageComponent" in ds else None
    if cic:
        return str(cic).upper()
    ge = ds.get((0x0043, 0x102F)) if hasattr(ds, "get") else None  # GE private image type
    if ge is not None and ge.value is not None:
        raw = ge.value
        code = int.from_bytes(raw[:2], "little", signed=True) if isinstance(raw, bytes) else raw
        try:
            return {0: "MAGNITUDE", 1: "PHASE", 2: "REAL", 3: "IMAGINARY"}.get(int(code), "")
        except (TypeError, ValueError):
            pass
    it = [str(x).upper() for x in (ds.ImageType if "ImageType" in ds else [])]
    if "P" in it or "PHASE" in it or "PHASE MAP" in it:
        return "PHASE"
    if "R" in it or "REAL" in it:
        return "REAL"
    if "I" in it or "IMAGINARY" in it:
        return "IMAGINARY"
    if "M" in it or "MAGNITUDE" in it:
        return "MAGNITUDE"
    return ""


def _decoder(ds: "Dataset") -> Callable[[], np.ndarray]:
    """Decode pixel data once (lazily), with a clear error for missing decoders."""
    cache: list[np.ndarray] = []

    def decode() -> np.ndarray:
        if cache:
            return cache[0]
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise InvalidSeries(f"SOP {_uid(ds)} has no pixel data")
        if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
            raise InvalidSeries(
                f"SOP {_uid(ds)} is a colour image (SamplesPerPixel {ds.SamplesPerPixel}); only greyscale CT/MR is analysed"
            )
        photometric = str(getattr(ds, "PhotometricInterpretation", "") or "").strip().upper()
        if photometric not in ("", "MONOCHROME1", "MONOCHROME2"):
            raise InvalidSeries(
                f"SOP {_uid(ds)} is a colour image (PhotometricInterpretation {photometric}); "
                "only greyscale CT/MR is analysed"
            )
        try:
            arr = ds.pixel_array
        except Exception as exc:  # decoder missing, truncated data, inconsistent header
            ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            ts_txt = f"{ts.name} ({ts})" if ts is not None and hasattr(ts, "name") else "unknown transfer syntax"
            raise InvalidSeries(f"cannot decode pixel data of SOP {_uid(ds)} ({ts_txt}): {exc}") from exc
        cache.append(np.asarray(arr))
        return cache[0]

    return decode


def _with_modality_lut(ds: "Dataset", decode: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """Stored values through the instance's Modality LUT Sequence (in place of a rescale)."""
    def get() -> np.ndarray:
        try:
            return np.asarray(apply_modality_lut(decode(), ds))
        except InvalidSeries:
            raise
        except Exception as exc:  # malformed LUT descriptor or data
            raise InvalidSeries(
                f"SOP {_uid(ds)}: its Modality LUT Sequence cannot be applied ({type(exc).__name__})"
            ) from exc

    return get


# --------------------------------------------------------------------------- slices from instances


def _single_frame_slice(ds: "Dataset") -> _Slice:
    who = f"SOP {_uid(ds)}"
    missing = [
        kw for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
        if kw not in ds or ds[kw].value in (None, "", [])
    ]
    if missing:
        raise InvalidSeries(f"{who} lacks {', '.join(missing)}: its position in the patient is unknown")
    decode = _decoder(ds)
    ps = _floats(ds.PixelSpacing, 2, "PixelSpacing", who)
    if np.any(ps <= 0):
        raise InvalidSeries(f"{who}: PixelSpacing {list(ps)} is not positive")
    slope, intercept = _slope(ds, who), _intercept(ds, who)
    padding = _padding(ds)
    if "ModalityLUTSequence" in ds and ds.ModalityLUTSequence and "RescaleSlope" not in ds:
        decode = _with_modality_lut(ds, decode)  # (a CT's rescale is Type 1 and wins where both are present)
        padding = None  # the stored values are not what the LUT gives
    return _Slice(
        ref=FrameRef(_uid(ds), str(getattr(ds, "SOPClassUID", "")), None),
        position=_floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", who),
        orientation=_floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", who),
        pixel_spacing=(float(ps[0]), float(ps[1])),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        slope=slope,
        intercept=intercept,
        thickness=_number(ds, "SliceThickness", who),
        frame_of_reference=str(getattr(ds, "FrameOfReferenceUID", "") or ""),
        component=_component(ds),
        pixels=decode,
        tilt_attr=_number(ds, "GantryDetectorTilt", who),
        padding=padding,
        acquisition=str(ds.get("AcquisitionNumber", "") or "").strip(),
    )


def _macro(groups: list[Any], seq_kw: str) -> Any:
    """First item of ``seq_kw`` found in the per-frame group, else the shared group."""
    for g in groups:
        if g is not None and seq_kw in g and g[seq_kw].value:
            return g[seq_kw].value[0]
    return None


def _multi_frame_slices(ds: "Dataset") -> list[_Slice]:
    who = f"SOP {_uid(ds)}"
    n = _frame_count(ds)
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds and ds.SharedFunctionalGroupsSequence else None
    per_frame = list(ds.PerFrameFunctionalGroupsSequence) if "PerFrameFunctionalGroupsSequence" in ds else []
    if len(per_frame) != n:
        raise InvalidSeries(
            f"{who}: NumberOfFrames is {n} but PerFrameFunctionalGroupsSequence has {len(per_frame)} items"
        )
    if "Rows" not in ds or "Columns" not in ds:
        raise InvalidSeries(f"{who} lacks Rows/Columns")
    decode_all = _decoder(ds)

    def frame_getter(i: int) -> Callable[[], np.ndarray]:
        def get() -> np.ndarray:
            arr = decode_all()
            if arr.ndim == 2:
                arr = arr[None]
            if arr.shape[0] != n:
                raise InvalidSeries(f"{who}: pixel data holds {arr.shape[0]} frames, NumberOfFrames says {n}")
            return arr[i]

        return get

    top_component = _component(ds)
    padding = _padding(ds)  # the instance's, for every frame
    out = []
    for i, pf in enumerate(per_frame):
        groups = [pf, shared]
        fwho = f"{who} frame {i + 1}"
        pos = _macro(groups, "PlanePositionSequence")
        ori = _macro(groups, "PlaneOrientationSequence")
        meas = _macro(groups, "PixelMeasuresSequence")
        missing = [
            name for name, item, kw in (
                ("PlanePositionSequence/ImagePositionPatient", pos, "ImagePositionPatient"),
                ("PlaneOrientationSequence/ImageOrientationPatient", ori, "ImageOrientationPatient"),
                ("PixelMeasuresSequence/PixelSpacing", meas, "PixelSpacing"),
            ) if item is None or kw not in item
        ]
        if missing:
            raise InvalidSeries(f"{fwho} lacks {', '.join(missing)}: its position in the patient is unknown")
        ps = _floats(meas.PixelSpacing, 2, "PixelSpacing", fwho)
        if np.any(ps <= 0):
            raise InvalidSeries(f"{fwho}: PixelSpacing {list(ps)} is not positive")
        thickness = _number(meas, "SliceThickness", fwho)
        pvt = _macro(groups, "PixelValueTransformationSequence")
        slope, intercept = 1.0, 0.0
        if pvt is not None:
            slope, intercept = _slope(pvt, fwho), _intercept(pvt, fwho)
        elif "RescaleSlope" in ds:  # legacy converted objects sometimes keep it at the top
            slope, intercept = _slope(ds, fwho), _intercept(ds, fwho)
        ftype = _macro(groups, "MRImageFrameTypeSequence") or _macro(groups, "CTImageFrameTypeSequence")
        component = _component(ftype) if ftype is not None else ""
        gantry = _macro(groups, "CTGeometrySequence")
        tilt = None
        if "GantryDetectorTilt" in ds:
            tilt = _number(ds, "GantryDetectorTilt", fwho)
        elif gantry is not None and "GantryDetectorTilt" in gantry:
            tilt = _number(gantry, "GantryDetectorTilt", fwho)
        out.append(
            _Slice(
                ref=FrameRef(_uid(ds), str(getattr(ds, "SOPClassUID", "")), i + 1),
                position=_floats(pos.ImagePositionPatient, 3, "ImagePositionPatient", fwho),
                orientation=_floats(ori.ImageOrientationPatient, 6, "ImageOrientationPatient", fwho),
                pixel_spacing=(float(ps[0]), float(ps[1])),
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                slope=slope,
                intercept=intercept,
                thickness=thickness,
                frame_of_reference=str(getattr(ds, "FrameOfReferenceUID", "") or ""),
                component=component or top_component,
                pixels=frame_getter(i),
                tilt_attr=tilt,
                padding=padding,
            )
        )
    return out


def _is_multi_frame(ds: "Dataset") -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or str(getattr(ds, "SOPClassUID", "")) in (
        ENHANCED_CT,
        ENHANCED_MR,
        LEGACY_ENHANCED_CT,
        LEGACY_ENHANCED_MR,
    )


# --------------------------------------------------------------------------- checks


def _unit(v: np.ndarray, who: str, what: str) -> np.ndarray:
    u = unit(v)
    if u is None:
        raise InvalidSeries(f"{who}: ImageOrientationPatient {what} direction is a zero vector")
    return u


def _fmt(v: np.ndarray) -> str:
    return "[" + ", ".join(f"{x + 0.0:.4g}" for x in v) + "]"


def _check_consistency(slices: list[_Slice]) -> tuple[np.ndarray, np.ndarray]:
    ref = slices[0]
    row = _unit(ref.orientation[:3], ref.label, "row")
    col = _unit(ref.orientation[3:], ref.label, "column")
    if abs(float(np.dot(row, col))) > np.sin(np.radians(ORIENTATION_TOLERANCE_DEG)):
        raise InvalidSeries(
            f"{ref.label}: ImageOrientationPatient {_fmt(ref.orientation)} has row and column directions that are not perpendicular"
        )
    col = _unit(col - np.dot(col, row) * row, ref.label, "column")
    for s in slices[1:]:
        _unit(s.orientation[:3], s.label, "row")
        _unit(s.orientation[3:], s.label, "column")
        worst = orientation_apart_deg(row, col, s.orientation)
        if worst > ORIENTATION_TOLERANCE_DEG:
            raise InvalidSeries(
                f"mixed orientations: {ref.label} has ImageOrientationPatient {_fmt(ref.orientation)} but "
                f"{s.label} has {_fmt(s.orientation)} ({worst:.1f}° apart); the series mixes image planes "
                "(e.g. a localiser or reformat inside the series) and cannot be one volume"
            )
    for s in slices[1:]:
        if (s.rows, s.columns) != (ref.rows, ref.columns):
            raise InvalidSeries(
                f"mixed matrix sizes: {ref.label} is {ref.rows}×{ref.columns} but {s.label} is {s.rows}×{s.columns} (Rows×Columns)"
            )
        if max(abs(s.pixel_spacing[0] - ref.pixel_spacing[0]), abs(s.pixel_spacing[1] - ref.pixel_spacing[1])) > PIXEL_SPACING_TOLERANCE_MM:
            raise InvalidSeries(
                f"mixed pixel spacing: {ref.label} has PixelSpacing {list(ref.pixel_spacing)} mm but "
                f"{s.label} has {list(s.pixel_spacing)} mm"
            )
    fors = {s.frame_of_reference for s in slices}
    if len(fors) > 1:
        raise InvalidSeries(f"mixed frames of reference in one series: FrameOfReferenceUID {sorted(fors)}")
    return row, col


def _keep_one_component(slices: list[_Slice], warnings: list[str]) -> list[_Slice]:
    """Vendors sometimes put magnitude and phase images in one series: keep the magnitude."""
    comps = {s.component for s in slices}
    if len(comps) <= 1 or "MAGNITUDE" not in comps:
        return slices
    kept = [s for s in slices if s.component == "MAGNITUDE"]
    dropped = len(slices) - len(kept)
    others = ", ".join(sorted(c.lower() or "unlabelled" for c in comps - {"MAGNITUDE"}))
    warnings.append(f"series mixes magnitude and {others} images: {dropped} non-magnitude images were left out")
    return kept


def _check_spacing(slices: list[_Slice], d: np.ndarray, zones: bool) -> float:
    """Duplicates and gaps along the normal (``zones``: two even zones are no gap, CT only); returns the median
    spacing (mm)."""
    judged = spacing(d, zones)
    diffs, median, dups, gaps = judged.diffs, judged.median, judged.duplicates, judged.gaps
    if dups.size:
        k = int(dups[0])
        a, b = slices[k], slices[k + 1]
        more = f" ({dups.size} duplicate pairs in all)" if dups.size > 1 else ""
        raise InvalidSeries(
            f"duplicate slice position: {a.label} and {b.label} are both at {d[k]:.2f} mm along the slice normal "
            f"(ImagePositionPatient {_fmt(a.position)} and {_fmt(b.position)}){more}; the series holds two copies "
            "of a slice or two interleaved stacks (echoes, magnitude and phase, repeated acquisition)"
        )
    if gaps.size:
        parts = []
        total = 0
        for k in gaps[:5]:
            k = int(k)
            n_missing = max(1, int(round(diffs[k] / median)) - 1)
            total += n_missing
            parts.append(
                f"a {diffs[k]:.2f} mm gap between slice {k + 1} at {d[k]:.2f} mm ({slices[k].label}) and slice "
                f"{k + 2} at {d[k + 1]:.2f} mm ({slices[k + 1].label}), about {n_missing} slice{'s' if n_missing > 1 else ''} missing"
            )
        if gaps.size > 5:
            parts.append(f"and {gaps.size - 5} more gaps")
        raise InvalidSeries(
            f"missing slices: the slice spacing is {median:.2f} mm but there is " + "; ".join(parts)
            + " — the series is incomplete or was sent only in part"
        )
    return median


def _check_acquisitions(slices: list[_Slice], d: np.ndarray) -> None:
    """CT: two acquisitions (AcquisitionNumber) in one series must not cover the same part of the head. A repeat
    scan sent in the series of the first interleaves with it (half a slice apart it even looks like one evenly
    spaced stack) and would be read as one volume at half its slice spacing. Acquisitions that follow each other
    along the head (step-and-shoot numbers each rotation) overlap by at most a slice or two, and pass. Judged before
    the spacing, whose message (missing slices) would not say what is wrong."""
    extent: dict[str, list[float]] = {}
    for s, at in zip(slices, d):
        if s.acquisition:
            extent.setdefault(s.acquisition, []).append(float(at))
    spans = sorted((min(v), max(v), k, len(v), float(np.median(np.diff(v))) if len(v) > 1 else 0.0)
                   for k, v in extent.items())
    for (lo_a, hi_a, a, n_a, step_a), (lo_b, hi_b, b, n_b, step_b) in zip(spans, spans[1:]):
        overlap = min(hi_a, hi_b) - lo_b
        if overlap > 0 and overlap > 2 * max(step_a, step_b):
            raise InvalidSeries(
                f"two acquisitions in one series cover the same part of the head: AcquisitionNumber {a} ({n_a} "
                f"slices, {lo_a:.1f} to {hi_a:.1f} mm along the slice normal) and {b} ({n_b} slices, {lo_b:.1f} to "
                f"{hi_b:.1f} mm) overlap by {overlap:.1f} mm; a repeated scan was sent in the same series — send "
                "each acquisition as a series of its own"
            )


def _check_in_plane_drift(slices: list[_Slice], d: np.ndarray, row: np.ndarray, col: np.ndarray) -> None:
    """Slice origins must lie on one line (a straight stack, possibly sheared by gantry tilt)."""
    pos = np.stack([s.position for s in slices])
    inplane = np.stack([pos @ row, pos @ col], axis=1)  # (n, 2) mm
    A = np.stack([d, np.ones_like(d)], axis=1)
    coef, *_ = np.linalg.lstsq(A, inplane, rcond=None)
    resid = inplane - A @ coef
    px = np.asarray(slices[0].pixel_spacing)[::-1]  # (col spacing along row dir, row spacing along col dir)
    drift = np.max(np.abs(resid) / px, axis=1)
    worst = int(np.argmax(drift))
    if drift[worst] > IN_PLANE_DRIFT_TOLERANCE_PX:
        raise InvalidSeries(
            f"inconsistent slice positions: {slices[worst].label} at {_fmt(slices[worst].position)} is shifted "
            f"{drift[worst]:.1f} pixels in-plane from the line through the other slices; the series mixes stacks "
            "with different fields of view"
        )


# --------------------------------------------------------------------------- public


def _fill_padding(plane: np.ndarray, padded: np.ndarray) -> None:
    """Padding pixels are not part of the image: they take the lowest value of the plane's real pixels (air on a
    CT), not the stored padding value's rescale (-2000 HU, or 62 000 where it is stored unsigned)."""
    if padded.any():
        real = plane[~padded]
        plane[padded] = real.min() if real.size else 0.0


def load(series: Series) -> Volume:
    """Build a geometrically checked ``Volume`` in the source grid, or raise ``InvalidSeries``."""
    if not series.datasets:
        raise InvalidSeries(f"series {series.series_uid} has no instances")
    slices: list[_Slice] = []
    for ds in series.datasets:
        if _is_multi_frame(ds):
            slices.extend(_multi_frame_slices(ds))
        elif _frame_count(ds) > 1:
            raise InvalidSeries(
                f"SOP {_uid(ds)} has {ds.NumberOfFrames} frames but no per-frame geometry "
                "(PerFrameFunctionalGroupsSequence); only enhanced multi-frame objects can be placed in the patient"
            )
        else:
            slices.append(_single_frame_slice(ds))

    warnings: list[str] = []
    slices = _keep_one_component(slices, warnings)
    if len(slices) < MIN_SLICES:
        raise InvalidSeries(
            f"only {len(slices)} slice{'s' if len(slices) != 1 else ''} in series {series.series_uid}; "
            f"at least {MIN_SLICES} are needed for a volume"
        )
    row, col = _check_consistency(slices)
    normal = np.cross(row, col)

    d_all = np.array([float(np.dot(s.position, normal)) for s in slices])
    order = np.argsort(d_all, kind="stable")
    slices = [slices[i] for i in order]
    d = d_all[order]
    modality = str(series.header.get("Modality", "") or "").upper()
    if modality == "CT":  # (MR concatenations interleave their packages by design)
        _check_acquisitions(slices, d)
    median = _check_spacing(slices, d, zones=modality == "CT")
    _check_in_plane_drift(slices, d, row, col)

    diffs = np.diff(d)
    if median > 0 and (diffs.max() - diffs.min()) > UNEVEN_SPACING_WARNING * median:
        warnings.append(
            f"uneven slice spacing ({diffs.min():.2f} to {diffs.max():.2f} mm): volumes weigh each slice by its own "
            "spacing"
        )

    positions = np.stack([s.position for s in slices]).astype(np.float64)
    step = (positions[-1] - positions[0]) / (len(positions) - 1)
    step_norm = float(np.linalg.norm(step))
    tilt = angle_deg(step / step_norm, normal) if step_norm > 0 else 0.0
    attr_tilts = [s.tilt_attr for s in slices if s.tilt_attr is not None]
    attr_tilt = attr_tilts[0] if attr_tilts else None
    if tilt > GANTRY_TILT_WARNING_DEG:
        warnings.append(f"gantry tilt {tilt:.1f}°: sheared grid, volumes measured along the slice normal")
        if attr_tilt is not None and abs(abs(attr_tilt) - tilt) > 1.0:
            warnings.append(
                f"GantryDetectorTilt says {attr_tilt:.1f}° but the slice positions show {tilt:.1f}°; the positions are used"
            )

    thicknesses = [s.thickness for s in slices if s.thickness is not None]
    thickness = float(np.median(thicknesses)) if thicknesses else None
    if thickness is not None and thickness > THICK_SLICE_WARNING_MM:
        warnings.append(f"thick slices ({thickness:.1f} mm): small lesions are diluted by partial volume")
    if any(is_lossy(ds) for ds in series.datasets):
        warnings.append(LOSSY_WARNING)
    if not slices[0].frame_of_reference:
        warnings.append("no FrameOfReferenceUID: results cannot be registered to other series")

    array = np.empty((len(slices), slices[0].rows, slices[0].columns), dtype=np.float32)
    for k, s in enumerate(slices):
        px = s.pixels()
        if px.shape != (s.rows, s.columns):
            raise InvalidSeries(f"{s.label}: pixel data is {px.shape[0]}×{px.shape[1]} but Rows×Columns says {s.rows}×{s.columns}")
        if s.slope == 1.0 and s.intercept == 0.0:
            array[k] = px
        else:
            array[k] = px.astype(np.float64) * s.slope + s.intercept
        if s.padding is not None and np.issubdtype(px.dtype, np.integer):
            stored = px.astype(np.int64, copy=False)  # the padding values are in the pixels' signedness (_as_stored)
            _fill_padding(array[k], (stored >= s.padding[0]) & (stored <= s.padding[1]))

    return Volume(
        array=array,
        row_direction=tuple(float(x) for x in row),  # type: ignore[arg-type]
        column_direction=tuple(float(x) for x in col),  # type: ignore[arg-type]
        pixel_spacing=slices[0].pixel_spacing,
        positions=positions,
        frames=tuple(s.ref for s in slices),
        frame_of_reference_uid=slices[0].frame_of_reference,
        slice_thickness=thickness,
        warnings=tuple(warnings),
    )
