"""Public value types of the phantom package."""
from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's registered root, for synthetic data


def synthetic_uid(*parts) -> str:
    """A deterministic UID from the given parts (same parts → same UID)."""
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=["svdmark-phantom"] + [str(p) for p in parts])


class SeriesKind(str, enum.Enum):
    NCCT = "ncct"  # target: non-contrast head CT, soft kernel
    SWI = "swi"  # target: SWI magnitude (Siemens SWI_Images, GE SWAN, Philips SWIp, Canon)
    SWI_PHASE = "swi_phase"
    SWI_MINIP = "swi_minip"
    SWI_MAG = "swi_mag"  # the raw GRE magnitude some vendors send alongside SWI (Siemens Mag_Images)
    LOCALIZER = "localizer"
    CT_BONE = "ct_bone"
    CT_CONTRAST = "ct_contrast"
    T1 = "t1"
    FLAIR = "flair"

    @property
    def is_target(self) -> bool:
        return self in (SeriesKind.NCCT, SeriesKind.SWI)

    @property
    def modality(self) -> str:
        return "CT" if self in (SeriesKind.NCCT, SeriesKind.CT_BONE, SeriesKind.CT_CONTRAST) else "MR"


class Vendor(str, enum.Enum):
    SIEMENS = "siemens"
    GE = "ge"
    PHILIPS = "philips"
    CANON = "canon"


@dataclass(frozen=True)
class Phantom:
    image: np.ndarray  # (z, y, x) float32, HU for CT, magnitude for SWI
    pixel_spacing: tuple[float, float]  # (row, col) mm
    positions: np.ndarray  # (z, 3) ImagePositionPatient per slice
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    frame_of_reference_uid: str
    slice_thickness: float
    truth_mask: np.ndarray  # uint8 on the same grid: WML (NCCT) or CMB (SWI)
    truth_wml_ml: float
    microbleeds: tuple  # ((x, y, z) patient mm, diameter mm, location)
    modality: str  # 'CT' | 'MR'
    kind: SeriesKind
    seed: int = 0
    spacing_between_slices: float = 0.0  # along the normal
    gantry_tilt_deg: float = 0.0
    # meta: generation parameters (tissue values, noise, fov, mimics, contrast...), JSON-friendly
    meta: dict = field(default_factory=dict, compare=False, hash=False, repr=False)
    # aux: extra arrays on the same grid; NCCT: "wml_fraction" = per-voxel lesion occupancy in [0, 1]
    # (truth_mask == wml_fraction >= 0.5), the partial-volume-aware regression target
    aux: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]

    @property
    def normal(self) -> np.ndarray:
        return np.cross(np.asarray(self.row_direction), np.asarray(self.column_direction))

    @property
    def voxel_volume_mm3(self) -> float:
        return self.pixel_spacing[0] * self.pixel_spacing[1] * self.spacing_between_slices

    @property
    def n_microbleeds(self) -> int:
        return len(self.microbleeds)

    def index_to_patient(self, k, i, j) -> np.ndarray:
        k = np.asarray(k, float)
        step = (self.positions[-1] - self.positions[0]) / max(len(self.positions) - 1, 1)
        return (self.positions[0] + np.multiply.outer(k, step)
                + np.multiply.outer(np.asarray(j, float) * self.pixel_spacing[1], np.asarray(self.row_direction))
                + np.multiply.outer(np.asarray(i, float) * self.pixel_spacing[0], np.asarray(self.column_direction)))

    def patient_to_index(self, xyz) -> np.ndarray:
        step = (self.positions[-1] - self.positions[0]) / max(len(self.positions) - 1, 1)
        if len(self.positions) < 2:
            step = self.normal * self.spacing_between_slices
        M = np.stack([step, np.asarray(self.column_direction) * self.pixel_spacing[0],
                      np.asarray(self.row_direction) * self.pixel_spacing[1]], 1)
        return (np.asarray(xyz, float) - self.positions[0]) @ np.linalg.inv(M).T

    def replace(self, **kw) -> "Phantom":
        from dataclasses import replace

        return replace(self, **kw)


@dataclass(frozen=True)
class StudyInfo:
    study_uid: str
    patient_name: str = "PHANTOM^NCCT^001"
    patient_id: str = "PH0001"
    patient_birth_date: str = "19500101"
    patient_sex: str = "O"
    patient_age: str = "075Y"
    accession_number: str = "PHA0001"
    study_id: str = "1"
    study_date: str = "20240101"
    study_time: str = "101500"
    study_description: str = "Head"
    referring_physician: str = ""
    institution_name: str | None = None  # None: the vendor style's default

    @classmethod
    def synthetic(cls, seed: int, kind: str = "ncct", vendor: str = "siemens") -> "StudyInfo":
        rng = np.random.default_rng([int(seed), 0x57D7])
        year = int(rng.integers(1935, 1965))
        month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
        sdate = f"{int(rng.integers(2019, 2026))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
        study_year = int(sdate[:4])
        desc = {"ncct": {"siemens": "CT^Kopf", "ge": "CT HEAD W/O CONTRAST", "philips": "Brain",
                         "canon": "HEAD ROUTINE"},
                "swi": {"siemens": "MR^Kopf", "ge": "MRI BRAIN", "philips": "Brain SWI",
                        "canon": "BRAIN"}}.get(kind, {}).get(vendor, "HEAD")
        return cls(
            study_uid=synthetic_uid("study", seed, kind, vendor),
            patient_name=f"PHANTOM^{kind.upper()}^{seed % 1000:03d}",
            patient_id=f"PH{seed % 10000:04d}",
            patient_birth_date=f"{year}{month:02d}{day:02d}",
            patient_sex=str(rng.choice(["F", "M"])),
            patient_age=f"{study_year - year:03d}Y",
            accession_number=f"PHA{seed % 100000:05d}",
            study_id=str(seed % 100000),
            study_date=sdate,
            study_time=f"{int(rng.integers(7, 20)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}",
            study_description=desc,
        )


@dataclass(frozen=True)
class SeriesTruth:
    series_uid: str
    series_number: int
    kind: str
    target: bool
    description: str
    folder: str
    n_instances: int
    transfer_syntax: str
    sop_class_uid: str


@dataclass(frozen=True)
class StudyTruth:
    study_uid: str
    kind: str  # 'ncct' | 'swi'
    vendor: str
    seed: int
    series: tuple[SeriesTruth, ...]
    truth_wml_ml: float | None = None
    microbleeds: tuple = ()  # ((x,y,z), diameter, location)
    cmb_count: int | None = None
    grade: int | None = None
    gantry_tilt_deg: float = 0.0
    matrix: tuple = ()
    slice_thickness: float = 0.0
    out_dir: str = ""

    @property
    def targets(self) -> tuple[SeriesTruth, ...]:
        return tuple(s for s in self.series if s.target)

    @property
    def distractors(self) -> tuple[SeriesTruth, ...]:
        return tuple(s for s in self.series if not s.target)

    @property
    def target_series_uid(self) -> str:
        return self.targets[0].series_uid

    def to_dict(self) -> dict:
        d = asdict(self)
        d["series"] = [asdict(s) for s in self.series]
        d["microbleeds"] = [{"center_mm": list(c), "diameter_mm": dm, "location": loc} for c, dm, loc in self.microbleeds]
        d["matrix"] = list(self.matrix)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "StudyTruth":
        d = dict(d)
        d["series"] = tuple(SeriesTruth(**s) for s in d["series"])
        d["microbleeds"] = tuple((tuple(m["center_mm"]), m["diameter_mm"], m["location"]) for m in d["microbleeds"])
        d["matrix"] = tuple(d.get("matrix", ()))
        return cls(**d)

    @classmethod
    def load(cls, path) -> "StudyTruth":
        p = Path(path)
        if p.is_dir():
            p = p / "truth.json"
        return cls.from_dict(json.loads(p.read_text()))
