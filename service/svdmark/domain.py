"""Typed values that the pipeline stages hand each other.

The data flow is: ``Series`` (receive/assemble) → ``RoutingDecision`` (route)
→ ``Volume`` (volume) → ``WmlFindings`` / ``CmbFindings`` (infer + measure)
→ ``Flag`` (rules) → DICOM datasets (encode) → deliveries (export).

Nothing in here imports a third-party DICOM, imaging or inference library
except numpy and (for type hints only) pydicom.
"""
from __future__ import annotations

import enum
import math
import re
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from pydicom import Dataset


class Task(str, enum.Enum):
    """What a model measures."""

    WML = "wml"  # white matter lesion volume on NCCT
    CMB = "cmb"  # cerebral microbleeds on SWI


class RouteKind(str, enum.Enum):
    """Outcome of routing one series."""

    WML = "wml"
    CMB = "cmb"
    IGNORED = "ignored"

    @property
    def task(self) -> Task | None:
        return None if self is RouteKind.IGNORED else Task(self.value)


class BurdenGrade(enum.IntEnum):
    """CMB burden categories of Xu et al., JAHA 2024 (after Topiwala et al. 2022)."""

    NONE = 0  # no CMB
    LOW = 1  # 1-9
    MODERATE = 2  # 10-30
    HIGH = 3  # > 30

    @classmethod
    def from_count(cls, count: int) -> "BurdenGrade":
        if count < 0:
            raise ValueError(f"negative microbleed count {count}")
        return cls.of_value(count)

    @classmethod
    def of_value(cls, x: float) -> "BurdenGrade":
        """The grade of a count or of an interval's end, whole or not, as the ECMO rule grades them and as the
        source words them: fewer than 10 is grade 1 (9.5 too), 10 to 30 grade 2, more than 30 grade 3 (30.5 too);
        ValueError for a negative or non-finite value."""
        if not math.isfinite(x) or x < 0:
            raise ValueError(f"a microbleed count cannot be {x!r}")
        return cls.NONE if x == 0 else cls.LOW if x < 10 else cls.MODERATE if x <= 30 else cls.HIGH

    @classmethod
    def spanned(cls, count: int, low: float, high: float) -> tuple["BurdenGrade", "BurdenGrade"]:
        """The lowest and highest grade of a count and its interval's ends."""
        grades = [cls.of_value(float(x)) for x in (low, count, high)]
        return min(grades), max(grades)

    @property
    def meaning(self) -> str:
        return {
            0: "No cerebral microbleeds",
            1: "Low burden (1-9 cerebral microbleeds)",
            2: "Moderate burden (10-30 cerebral microbleeds)",
            3: "High burden (more than 30 cerebral microbleeds)",
        }[int(self)]


class SeriesState(str, enum.Enum):
    RECEIVING = "receiving"  # instances arriving; the assembler waits for the series to be complete
    QUEUED = "queued"  # complete: its job for the current generation is queued or running
    ANALYSED = "analysed"  # that job ended (done, failed or ignored)


class JobState(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    IGNORED = "ignored"
    SUPERSEDED = "superseded"


class DeliveryState(str, enum.Enum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    DEAD = "dead"
    SUPERSEDED = "superseded"  # never sent: newer results of the same series replaced it first


class SendClaim(str, enum.Enum):
    """What the journal answers an outbox about to send a delivery (true only for ``started``)."""

    STARTED = "started"  # pending → sending: send it now
    WITHDRAWN = "withdrawn"  # no longer pending (superseded after the outbox read it): never send it
    WAITING = "waiting"  # a rejection note whose job's results for that destination are not settled: later
    STALE = "stale"  # tried (or being tried) by another process since the outbox read it: read again, later

    def __bool__(self) -> bool:
        return self is SendClaim.STARTED


# --------------------------------------------------------------------------- input side


@dataclass(frozen=True)
class Series:
    """A complete series, as read back from the spool.

    ``datasets`` are full pydicom datasets (pixel data included), in no
    particular order; ``volume.load`` sorts them geometrically.
    """

    study_uid: str
    series_uid: str
    datasets: tuple["Dataset", ...]

    @property
    def header(self) -> "Dataset":
        """The first instance, for attributes that are constant across the series."""
        return self.datasets[0]


@dataclass(frozen=True)
class RoutingDecision:
    kind: RouteKind
    rule_id: str
    reason: str  # human-readable; for IGNORED it is what a PACS admin reads


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class FrameRef:
    """Which source image (and frame, 1-based, for multi-frame) a volume slice came from."""

    sop_instance_uid: str
    sop_class_uid: str
    frame_number: int | None = None  # None for single-frame instances


@dataclass(frozen=True)
class Volume:
    """A geometrically checked image stack in its *source* grid.

    ``array`` is float32 with shape (slices, rows, columns), in physical units
    (HU for CT after rescale). Slice k of the array is the image described by
    ``frames[k]`` with its top-left pixel centre at ``positions[k]`` (patient
    coordinates, mm). The grid is kept as acquired, so a tilted-gantry CT is a
    sheared grid: ``positions`` step along ``slice_step`` which need not be
    parallel to ``normal``.
    """

    array: np.ndarray
    row_direction: tuple[float, float, float]  # direction of increasing column index
    column_direction: tuple[float, float, float]  # direction of increasing row index
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm
    positions: np.ndarray  # (slices, 3) ImagePositionPatient per slice, sorted
    frames: tuple[FrameRef, ...]
    frame_of_reference_uid: str
    slice_thickness: float | None = None
    warnings: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def normal(self) -> np.ndarray:
        return np.cross(np.asarray(self.row_direction), np.asarray(self.column_direction))

    @property
    def slice_step(self) -> np.ndarray:
        """Mean vector between consecutive slice positions (mm)."""
        if len(self.positions) < 2:
            return self.normal * float(self.slice_thickness or 1.0)
        return (self.positions[-1] - self.positions[0]) / (len(self.positions) - 1)

    @property
    def slice_spacing(self) -> float:
        """Distance between slice planes, measured along the slice normal (mm)."""
        return abs(float(np.dot(self.slice_step, self.normal)))

    @property
    def gantry_tilt_degrees(self) -> float:
        step = self.slice_step
        n = np.linalg.norm(step)
        if n == 0:
            return 0.0
        cos = min(1.0, abs(float(np.dot(step / n, self.normal))))
        return float(np.degrees(np.arccos(cos)))

    @property
    def voxel_volume_mm3(self) -> float:
        """Physical voxel volume: pixel area times plane spacing along the normal.

        Correct for sheared (tilted) grids, because a parallelepiped's volume is
        base area times height.
        """
        return self.pixel_spacing[0] * self.pixel_spacing[1] * self.slice_spacing

    @property
    def slice_heights_mm(self) -> np.ndarray:
        """Each slice's share of the stack along the normal (mm): halfway to the slice before to halfway to the
        one after, an end slice as far again beyond itself. On an evenly spaced stack every entry is
        ``slice_spacing``; on an uneven one (spacing within the missing-slice limit) each slice keeps its own."""
        n = len(self.positions)
        if n < 2:
            return np.full(n, self.slice_spacing)
        gaps = np.abs(np.diff(np.asarray(self.positions, np.float64) @ self.normal))
        return np.concatenate([gaps[:1], (gaps[:-1] + gaps[1:]) / 2.0, gaps[-1:]])

    def physical_ml(self, per_voxel: np.ndarray) -> float:
        """The physical volume (mL) of ``per_voxel`` (a mask or partial-volume fractions on this grid): each slice's
        sum times its pixel area and its own height (``slice_heights_mm``), so uneven stacks measure right."""
        per_slice = np.asarray(per_voxel).reshape(len(self.positions), -1).sum(axis=1, dtype=np.float64)
        area = self.pixel_spacing[0] * self.pixel_spacing[1]
        return float(per_slice @ self.slice_heights_mm) * area / 1000.0

    def index_to_patient(self, k: float, i: float, j: float) -> np.ndarray:
        """Continuous voxel index (slice k, row i, column j) to patient mm.

        Interpolates between slice positions so fractional k is exact on
        sheared grids too.
        """
        k0 = int(np.clip(np.floor(k), 0, max(len(self.positions) - 2, 0)))
        frac = k - k0
        if len(self.positions) > 1:
            origin = self.positions[k0] * (1 - frac) + self.positions[k0 + 1] * frac
        else:
            origin = self.positions[0] + frac * self.slice_step
        return (
            origin
            + j * self.pixel_spacing[1] * np.asarray(self.row_direction)
            + i * self.pixel_spacing[0] * np.asarray(self.column_direction)
        )


# --------------------------------------------------------------------------- models


# --------------------------------------------------------------------------- model manifest


class ManifestFieldError(ValueError):
    """A manifest field of the wrong kind; the message names the field (the registry adds the file)."""


def _section(data: Mapping, key: str, where: str = "") -> Mapping | None:
    value = data.get(key)
    if value is not None and not isinstance(value, Mapping):
        raise ManifestFieldError(f"field {where}{key!r} must be an object, not {type(value).__name__}")
    return value


MAX_LIMITATION_CHARS = 300  # a sentence the summary image wraps onto a few lines


def _sentences(data: Mapping, key: str) -> tuple[str, ...]:
    """A list of short sentences (each ending with a full stop), or () when absent."""
    value = data.get(key, ())
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(s, str) and s.strip().endswith(".") and len(s) <= MAX_LIMITATION_CHARS for s in value):
        raise ManifestFieldError(f"field {key!r} must be a list of sentences (each ending with '.', at most "
                                 f"{MAX_LIMITATION_CHARS} characters), not {value!r}")
    return tuple(s.strip() for s in value)


def _number(data: Mapping, key: str, default, kind=float, where: str = ""):
    value = data.get(key, default)
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ManifestFieldError(f"field {where}{key!r} must be a number, not {value!r}") from None


def _numbers(data: Mapping, key: str, kind=float, where: str = "") -> tuple:
    value = data.get(key, ())
    try:
        return tuple(kind(v) for v in ([value] if isinstance(value, (int, float)) else value))
    except (TypeError, ValueError):
        raise ManifestFieldError(f"field {where}{key!r} must be a list of numbers, not {value!r}") from None


# the CT noise score's residual (``svdmark.measure.quality``): "median", which integer HU collapse to 0 and on which
# every manifest without ``quality.noise_score`` set its limit, or "neighbour_mean" (wml-ncct 1.12.5 on)
NOISE_SCORES = ("median", "neighbour_mean")
# what the CMB candidate density counts (``quality.candidate_count``): "passed", the candidates the stage passes on to
# the classifier (at most ``candidates.max_candidates``), on which every manifest without the field set its limit,
# or "found", every candidate it found (cmb-swi 1.10.4 on: a capped count could never exceed its limit)
CANDIDATE_COUNTS = ("passed", "found")
INPUT_KINDS = ("slice2d", "patch3d")  # 2-D sliding window (WML) | 3-D candidate patches (CMB)
# the test-time flips each input kind knows (``input.tta``; the runtime maps them to array axes)
TTA_NAMES = {"slice2d": ("lr", "slices"), "patch3d": ("normal", "column", "row", "transpose")}


@dataclass(frozen=True)
class InputSpec:
    """The manifest's ``input``: how the runtime feeds the model."""

    kind: str
    normalisation: Mapping
    spacing_mm: tuple[float, ...] = ()
    window: tuple[int, ...] = ()
    overlap: int = 0
    multiple_of: int = 1
    pad_value: float = -1000.0
    batch: int | None = None  # None: the runtime's default for the kind
    slab: int = 8
    context_slices: int = 0
    min_slice_mm: float = 0.0  # slice2d: thinner stacks are averaged through-plane into slabs at least this thick
    tta: tuple[str, ...] = ()  # test-time flips
    tta_from: float = 0.0  # patch3d: only patches whose first reading reaches this are read in every flip
    raw: Mapping = field(default_factory=dict, compare=False)  # the section as written (patch geometry for 3-D)

    @property
    def exact_from(self) -> float:
        """The lowest probability threshold at which a patch3d model's flip-averaged readings are exact: a patch
        first read under ``tta_from`` keeps that reading, and no average with it could reach this (0 without flips)."""
        if self.kind != "patch3d" or not self.tta:
            return 0.0
        return 1.0 - (1.0 - self.tta_from) / 2 ** len(self.tta)

    @classmethod
    def from_json(cls, data: Mapping) -> "InputSpec":
        w = "input."
        kind = data.get("kind")
        if kind not in INPUT_KINDS:
            raise ManifestFieldError(f"field {w}'kind' must be one of {', '.join(INPUT_KINDS)}, not {kind!r}")
        norm = _section(data, "normalisation", w)
        if norm is None:
            raise ManifestFieldError(f"field {w}'normalisation' is missing")
        tta = data.get("tta", ())
        if isinstance(tta, str) or not all(isinstance(t, str) for t in tta):
            raise ManifestFieldError(f"field {w}'tta' must be a list of flip names, not {tta!r}")
        unknown = sorted(set(tta) - set(TTA_NAMES[kind]))
        if unknown or len(set(tta)) < len(tta):
            raise ManifestFieldError(f"field {w}'tta' must name each test-time flip of a {kind} model at most once "
                                     f"(known: {', '.join(TTA_NAMES[kind])}), not {list(tta)!r}")
        tta_from = _number(data, "tta_from", 0.0, where=w)
        if "tta_from" in data and (kind != "patch3d" or tta_from is None or not 0.0 <= tta_from <= 1.0):
            raise ManifestFieldError(f"field {w}'tta_from' must be a probability 0-1 of a patch3d model, "
                                     f"not {data['tta_from']!r} ({kind})")
        return cls(kind=kind, normalisation=norm, spacing_mm=_numbers(data, "spacing_mm", where=w),
                   window=_numbers(data, "window", int, w), overlap=_number(data, "overlap", 0, int, w),
                   multiple_of=_number(data, "multiple_of", 1, int, w),
                   pad_value=_number(data, "pad_value", -1000.0, where=w), batch=_number(data, "batch", None, int, w),
                   slab=max(1, _number(data, "slab", 8, int, w)), context_slices=_number(data, "context_slices", 0, int, w),
                   min_slice_mm=_number(data, "min_slice_mm", 0.0, where=w), tta=tuple(tta),
                   tta_from=tta_from or 0.0, raw=data)


@dataclass(frozen=True)
class OutputSpec:
    """The manifest's ``output``: thresholds and post-processing of the model's output."""

    mask_threshold: float = 0.5  # WML: fraction at or above which a voxel is in the SEG
    threshold: float = 0.5  # CMB: probability at or above which a candidate is a microbleed
    fraction_floor: float = 0.0
    support_threshold: float = 0.0
    support_dilate_vox: int = 0
    merge_mm: float = 4.0
    max_count: int = 200
    # CMB: a candidate whose darkest voxel near its centre is brighter than this x the foreground median is not a
    # microbleed (``measure.darkness``); absent or null: no such criterion
    max_core_level: float = math.inf
    # CMB: ... or brighter than this x the median of the tissue 1-3 mm beyond it; absent or null: no such criterion
    max_core_to_surround: float = math.inf
    # CMB: a candidate inside the ellipsoid about a calcified mimic site (``measure.frame.SITES``; semi-axes in mm,
    # template axes) of the series' anatomical frame is not a microbleed; absent or empty: no such criterion
    mimic_sites: Mapping[str, tuple[float, float, float]] = field(default_factory=dict, hash=False)

    @classmethod
    def from_json(cls, data: Mapping) -> "OutputSpec":
        w = "output."
        spec = cls(*(_number(data, f.name, f.default, type(f.default), w) for f in fields(cls)
                     if f.name != "mimic_sites"), mimic_sites=_mimic_sites({} if data.get("mimic_sites") is None
                                                  else data["mimic_sites"]))
        return replace(spec, **{k: math.inf for k in ("max_core_level", "max_core_to_surround")
                                if getattr(spec, k) is None})


MIMIC_SITES = ("pineal", "choroid plexus glomus")  # the sites ``svdmark.measure.frame`` places


def _mimic_sites(data) -> dict[str, tuple[float, float, float]]:
    """``output.mimic_sites``: {site: [three positive semi-axes in mm]} for sites of ``MIMIC_SITES``."""
    if not isinstance(data, Mapping):
        raise ManifestFieldError(f"field output.'mimic_sites' must be an object of site: [3 semi-axes in mm], "
                                 f"not {data!r}")
    out = {}
    for site, semi in data.items():
        if site not in MIMIC_SITES:
            raise ManifestFieldError(f"field output.mimic_sites.{site!r} is not a known site "
                                     f"({', '.join(MIMIC_SITES)})")
        ok = (isinstance(semi, (list, tuple)) and len(semi) == 3
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                      for v in semi))
        if not ok:
            raise ManifestFieldError(f"field output.mimic_sites.{site!r} must be 3 positive semi-axes in mm, "
                                     f"not {semi!r}")
        out[site] = tuple(float(v) for v in semi)
    return out


_PLAIN_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")  # no folder, no "..", not hidden
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def self_test_reference_error(name, sha256) -> str | None:
    """Why a manifest's ``self_test.reference`` / ``reference_sha256`` cannot be used, else None: only a plain file
    name and a hex digest stay inside the version folder and the shared store (``svdmark.infer.reference``)."""
    if name is not None and not (isinstance(name, str) and _PLAIN_FILE_NAME.fullmatch(name)):
        return f"field self_test.'reference' must be a plain file name beside the model, not {name!r}"
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256_HEX.fullmatch(sha256)):
        return f"field self_test.'reference_sha256' must be 64 lower-case hex digits, not {sha256!r}"
    return None


@dataclass(frozen=True)
class SelfTestSpec:
    """The manifest's ``self_test``: the reference volumes (beside the model, or shared by the model's versions: see
    ``svdmark.infer.reference``) and the window its reading must hit."""

    reference: str | None  # its file name (selftest.npz): beside the model, or shared under reference_sha256
    expect: str  # "ratio_to_truth" | "volume_ml" | "count"
    bounds: tuple[float, float]
    reference_sha256: str | None = None  # the reference's SHA-256: checked, and its name in the shared store

    @classmethod
    def from_json(cls, data: Mapping) -> "SelfTestSpec":
        expect = _section(data, "expect", "self_test.") or {}
        sha, name = data.get("reference_sha256") or None, data.get("reference") or None
        why = self_test_reference_error(name, sha)
        if why:
            raise ManifestFieldError(why)
        for key in ("ratio_to_truth", "volume_ml", "count"):
            if key in expect:
                bounds = _numbers(expect, key, where="self_test.expect.")
                if len(bounds) != 2:
                    raise ManifestFieldError(f"field self_test.expect.{key!r} must be [low, high], not {expect[key]!r}")
                return cls(name, key, (bounds[0], bounds[1]), sha)
        raise ManifestFieldError("field self_test.'expect' needs one of ratio_to_truth, volume_ml, count")


@dataclass(frozen=True)
class Manifest(Mapping):
    """A model's ``manifest.json``, parsed once (:meth:`from_json`); still a read-only mapping of the JSON as
    written, for the sections only training and validation read (``manifest["training"]``, ``.get("validation")``)."""

    name: str | None
    version: str | None
    task: str | None
    sha256: str | None
    file: str | None
    input: InputSpec | None
    output: OutputSpec
    self_test: SelfTestSpec | None
    candidates: Mapping | None  # CMB candidate stage (parameters of preprocess.cmb_candidates)
    uncertainty: Mapping  # task ("wml" | "cmb") → calibration
    quality_limits: Mapping | None  # quality gate: {score: {"min"|"max": x} or {"range": [lo, hi]}}
    noise_score: str = "median"  # quality.noise_score: the residual the CT noise limit was set on (NOISE_SCORES)
    candidate_count: str = "passed"  # quality.candidate_count: what the density limit was set on (CANDIDATE_COUNTS)
    # what the model card measured that a reader of its numbers must know (its accuracy on data built by other code),
    # one sentence each; the SR and the summary image carry them beside every result of the model
    limitations: tuple[str, ...] = ()
    raw: Mapping = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: Mapping) -> "Manifest":
        """Raises ``ManifestFieldError`` naming the field; absent sections are None (or their defaults)."""
        if not isinstance(data, Mapping):
            raise ManifestFieldError(f"a manifest must be an object, not {type(data).__name__}")
        inp, out, st = (_section(data, k) for k in ("input", "output", "self_test"))
        quality = _section(data, "quality") or {}
        noise_score = quality.get("noise_score", "median")
        if noise_score not in NOISE_SCORES:
            raise ManifestFieldError(f"field quality.'noise_score' must be one of {', '.join(NOISE_SCORES)}, "
                                     f"not {noise_score!r}")
        candidate_count = quality.get("candidate_count", "passed")
        if candidate_count not in CANDIDATE_COUNTS:
            raise ManifestFieldError(f"field quality.'candidate_count' must be one of {', '.join(CANDIDATE_COUNTS)},"
                                     f" not {candidate_count!r}")
        man = cls(
            name=data.get("name"), version=data.get("version"), task=data.get("task"), sha256=data.get("sha256"),
            file=data.get("file"),
            input=InputSpec.from_json(inp) if inp is not None else None,
            output=OutputSpec.from_json(out or {}),
            self_test=SelfTestSpec.from_json(st) if st else None,
            candidates=_section(data, "candidates"),
            uncertainty=_section(data, "uncertainty") or {},
            quality_limits=_section(quality, "limits", "quality."), noise_score=noise_score,
            candidate_count=candidate_count,
            limitations=_sentences(data, "limitations"), raw=data,
        )
        man._check_exact_thresholds()
        return man

    def _check_exact_thresholds(self) -> None:
        """A flip-averaged patch model counts exactly only at thresholds of at least ``input.exact_from``."""
        bound = self.input.exact_from if self.input is not None else 0.0
        if not bound:
            return
        cmb = self.uncertainty.get("cmb") or {}
        named = {"output.'threshold'": self.output.threshold,
                 **{f"uncertainty.cmb.'{k}'": cmb[k] for k in ("threshold_low", "threshold_high") if k in cmb}}
        for where, t in named.items():
            if not isinstance(t, (int, float)) or t < bound - 1e-12:
                raise ManifestFieldError(f"field {where} is {t!r}, below {bound:.4f}, the lowest threshold at which "
                                         f"input.tta / input.tta_from count exactly")

    def __getitem__(self, key: str):
        return self.raw[key]

    def __iter__(self):
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class ModelSpec:
    """A model as described by its manifest in ``svdmark/data/models/<name>/<version>/`` (package data) or ``$SVDMARK_MODELS_DIR``.

    ``manifest`` is a :class:`Manifest`; a plain dict given here (a test's, training's variant) is parsed."""

    name: str
    version: str
    task: Task
    sha256: str
    path: Path  # the model.onnx file
    manifest: Manifest = field(default_factory=dict, compare=False, hash=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not isinstance(self.manifest, Manifest):
            object.__setattr__(self, "manifest", Manifest.from_json(self.manifest))

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Interval:
    """An uncertainty interval around a measured value (same unit), and how it was obtained."""

    low: float
    high: float
    method: str  # e.g. "test-time augmentation, 4 passes, min-max"

    def crosses(self, cut: float) -> bool:
        """True when ``cut`` lies strictly inside the interval (the value could be on either side)."""
        return self.low < cut < self.high


@dataclass(frozen=True)
class Quality:
    """The quality gate's verdict on one input: is the quantity reliably measurable on it?

    ``reasons`` are short human-readable sentences for the radiologist (empty when measurable);
    ``scores`` are the raw figures the gate compared with its limits (for logs and the audit trail).
    """

    measurable: bool
    reasons: tuple[str, ...] = ()
    scores: Mapping[str, float] = field(default_factory=dict, compare=False, hash=False)


# A WML volume (and its interval) is reported at this many decimals of a mL, everywhere a reader sees it (SR,
# summary image, tables), and the rules decide its category on that number: 16.996 mL is 17.00 mL at a 17 mL cut.
WML_REPORTED_DECIMALS = 2


@dataclass(frozen=True)
class WmlFindings:
    volume_ml: float  # partial-volume-aware physical volume
    mask: np.ndarray  # uint8, same shape as Volume.array, 1 = WML
    warnings: tuple[str, ...] = ()
    interval: Interval | None = None  # uncertainty of volume_ml (mL)
    quality: Quality | None = None  # None: no gate ran; measurable=False: report no number


def iso_utc(t: float | None = None) -> str:
    """Epoch seconds (now, without one) as ISO 8601 UTC, ``2026-11-30T19:40:00Z``: every time svdmark writes for a
    reader (tables, JSON, the CLI) is in this form."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def check_reportable(findings: "WmlFindings | CmbFindings") -> None:
    """ValueError, saying why, when the findings' number or interval cannot be reported: a volume that is negative
    or not finite, an interval that is not finite, reversed or below zero. A withheld result reports no number:
    nothing to check. The pipeline, the encoders and the rules ask this, whether or not a flag applies."""
    quality = findings.quality
    if quality is not None and not quality.measurable:
        return
    what = "WML volume" if isinstance(findings, WmlFindings) else "microbleed count"
    if isinstance(findings, WmlFindings):
        v = findings.volume_ml
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{what} is {v!r}: a volume is a finite number of 0 mL or more")
    iv = findings.interval
    if iv is None:
        return
    ends = (iv.low, iv.high)
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in ends):
        raise ValueError(f"{what} interval {iv.low!r}-{iv.high!r} is not two finite numbers (an uncertainty "
                         "interval is two finite numbers from 0, low to high)")
    if iv.low > iv.high or iv.low < 0:
        raise ValueError(f"{what} interval {iv.low!r}-{iv.high!r} is reversed or starts below 0 (an uncertainty "
                         "interval is two finite numbers from 0, low to high)")


@dataclass(frozen=True)
class Microbleed:
    center_mm: tuple[float, float, float]  # patient coordinates of the source frame of reference
    diameter_mm: float
    confidence: float  # 0..1
    location: str = "unspecified"  # "lobar" | "deep" | "infratentorial" | "unspecified"


@dataclass(frozen=True)
class CmbFindings:
    microbleeds: tuple[Microbleed, ...]
    mask: np.ndarray  # uint8, same shape as Volume.array, 1 = CMB
    warnings: tuple[str, ...] = ()
    interval: Interval | None = None  # uncertainty of the count (whole numbers)
    quality: Quality | None = None  # None: no gate ran; measurable=False: report no number

    @property
    def count(self) -> int:
        return len(self.microbleeds)

    @property
    def grade(self) -> BurdenGrade:
        return BurdenGrade.from_count(self.count)


Findings = Union[WmlFindings, CmbFindings]


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Flag:
    """One rule's output: descriptive, never a recommendation."""

    rule_id: str
    rule_version: str
    ruleset_version: str
    name: str  # short label, e.g. "Aspirin sICH effect modification by WML volume"
    category: str  # e.g. "large-wml" / "below-cut-point" / "grade-2"
    statement: str  # the full wording shown to the radiologist
    evidence_doi: str
    input_name: str  # e.g. "WML volume"
    input_value: float
    input_unit: str  # UCUM, e.g. "ml"
    values: dict[str, float] = field(default_factory=dict)  # e.g. {"or_ratio": .., "ci_low": .., "ci_high": ..}
    population: str = ""  # the evidence's population, one sentence; ``statement`` starts with it
    brief: tuple[str, ...] = ()  # a few short lines for the summary image (the statement, abridged)


@dataclass(frozen=True)
class RuleSetInfo:
    id: str
    version: str


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class AnalysisResult:
    """Everything one analysis produced, before encoding."""

    series: Series
    routing: RoutingDecision
    model: ModelSpec
    volume: Volume
    findings: Findings
    flags: tuple[Flag, ...]
    ruleset: RuleSetInfo
    seconds: float = 0.0


class OutputKind(enum.StrEnum):
    """A kind of produced DICOM object: the names of ``[[destinations]] outputs``, of the encoder's objects and of
    the journal's result rows (a ``StrEnum``, so it compares, hashes, formats and is stored as its value)."""

    SR = "sr"  # TID 1500 measurement report
    SEG = "seg"  # binary segmentation of the lesions
    SUMMARY = "summary"  # Secondary Capture summary image
    REJECTION = "rejection"  # IHE IOCM rejection note (KOS) for superseded results; never in a profile

    @classmethod
    def profile_kinds(cls) -> tuple["OutputKind", ...]:
        """The kinds a destination can ask for, in send order (SEG first, so the SR's reference resolves)."""
        return (cls.SEG, cls.SR, cls.SUMMARY)


FULL_PROFILE: frozenset[OutputKind] = frozenset(OutputKind.profile_kinds())  # what a destination gets by default
