"""The self-test reference of a model version, named by the manifest's ``self_test.reference``.

A few volumes with their truth, so that a model's self-test needs no study generator in the runtime
package. ``python -m training.selftest_reference`` writes it once per model version from the phantom
cases in ``self_test.cases``; the service only reads it.

Where it lies (:func:`locate`): beside the model (``<version>/selftest.npz``), else in the model's shared
store, ``<model>/references/<sha256>.npz``, by the manifest's ``self_test.reference_sha256``. Versions that
only re-calibrate their model test on the same phantoms, so the packaged versions share one file per model
(``training.selftest_reference --share``) instead of a 2.6 MB copy each; with a SHA-256 in the manifest the file
is checked against it wherever it lies. An installed version is self-contained (:func:`copy_into`).

Layout (a deflated numpy ``.npz``, no pickles): ``cases`` (their number) and, for case ``i``:

* ``i.high`` int8 and ``i.low`` uint8 (slices, rows, columns), the two bytes of the int16 stored value
  (stored = 256 × high + low; apart, deflate packs them a fifth smaller), with ``i.slope`` and
  ``i.intercept``: value = stored × slope + intercept (HU for CT, in whole HU; the magnitude for SWI, in
  steps below its noise);
* ``i.positions`` (slices × 3, mm), ``i.row_direction``, ``i.column_direction``, ``i.pixel_spacing``
  (row, column mm) and ``i.slice_thickness``: the grid, as ``volume.load`` would give it;
* the truth: ``i.wml_ml`` (WML volume, mL) or ``i.bleeds_mm`` (microbleed centres, patient mm, k × 3).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..domain import FrameRef, Task, Volume, self_test_reference_error
from ..errors import ModelError

INT16 = np.iinfo(np.int16)
STORE = "references"  # <model>/references/<sha256>.npz: one copy of a reference that the model's versions share
UID_ROOT = "2.25.1"  # the cases' synthetic UIDs: 2.25.1.<case>.0 (frame of reference), 2.25.1.<case>.<slice>


@dataclass(frozen=True)
class ReferenceCase:
    """One self-test volume and its truth: ``wml_ml`` for a WML case, ``bleeds_mm`` for a CMB case."""

    volume: Volume
    wml_ml: float | None = None
    bleeds_mm: np.ndarray | None = None  # (k, 3) microbleed centres, patient mm

    def truth(self, task: Task) -> float:
        """The quantity the self-test compares: WML volume (mL) or the number of microbleeds."""
        if Task(task) is Task.WML:
            if self.wml_ml is None:
                raise ModelError("the self-test reference has no WML volume for a WML model")
            return float(self.wml_ml)
        if self.bleeds_mm is None:
            raise ModelError("the self-test reference has no microbleeds for a CMB model")
        return float(len(self.bleeds_mm))


def find(version_dir: Path, name: str, sha256: str | None = None) -> Path | None:
    """Where the reference file ``name`` of the version in ``version_dir`` lies: beside the model, else in the
    model's shared store by ``sha256``; None when in neither (unchecked: :func:`locate` checks)."""
    for path in (Path(version_dir) / name, Path(version_dir).parent / STORE / f"{sha256}.npz" if sha256 else None):
        if path is not None and path.is_file():
            return path
    return None


def locate(version_dir: Path, name: str | None, sha256: str | None = None) -> Path:
    """The reference file ``name`` (the manifest's ``self_test.reference``) of the version in ``version_dir``,
    beside the model or shared (:func:`find`), checked against ``sha256`` (``self_test.reference_sha256``) when
    the manifest gives one. ModelError when it is missing or differs."""
    from .registry import sha256_file  # the registry's checksum; it imports nothing from here

    if not name:
        raise ModelError(f"{version_dir}: the manifest's self_test names no reference volume (self_test.reference)")
    why = self_test_reference_error(name, sha256)  # a manifest read as written (an install's) may name any path
    if why:
        raise ModelError(f"{version_dir}: {why}")
    path = find(version_dir, name, sha256)
    if path is None:
        shared = f", nor is the shared copy {Path(version_dir).parent / STORE / f'{sha256}.npz'}" if sha256 else ""
        raise ModelError(f"the self-test reference {Path(version_dir) / name} is missing{shared}")
    if sha256 and sha256_file(path) != sha256:
        raise ModelError(f"the self-test reference {path} is not the one the manifest names (sha256 "
                         f"{sha256[:12]}…); the file is corrupt or was replaced")
    return path


def copy_into(source_dir: Path, dest_dir: Path, self_test: Mapping | None) -> None:
    """Give the version copied from ``source_dir`` to ``dest_dir`` its reference beside the model, from wherever
    it lies in the source (``self_test``: the manifest's section as written; installed versions are
    self-contained)."""
    name = (self_test or {}).get("reference")
    if not name:
        return
    source = locate(source_dir, name, self_test.get("reference_sha256"))  # refuses a name that is not plain
    if (Path(dest_dir) / name).is_file():
        return
    try:
        shutil.copyfile(source, Path(dest_dir) / name)
    except OSError as exc:
        raise ModelError(f"cannot copy the self-test reference {source} into {dest_dir}: {exc}") from None


def load(path: Path) -> tuple[ReferenceCase, ...]:
    """The cases of a reference file; ModelError when it is missing or not a reference."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return tuple(_case(z, i) for i in range(int(z["cases"])))
    except FileNotFoundError:
        raise ModelError(f"the self-test reference {path} is missing") from None
    except (OSError, KeyError, ValueError) as exc:
        raise ModelError(f"the self-test reference {path} cannot be read: {exc}") from None


def _case(z, i: int) -> ReferenceCase:
    stored = z[f"{i}.high"].astype(np.int32) * 256 + z[f"{i}.low"]
    array = stored.astype(np.float32) * np.float32(z[f"{i}.slope"]) + np.float32(z[f"{i}.intercept"])
    thickness = float(z[f"{i}.slice_thickness"])
    volume = Volume(
        array=array,
        row_direction=tuple(float(v) for v in z[f"{i}.row_direction"]),
        column_direction=tuple(float(v) for v in z[f"{i}.column_direction"]),
        pixel_spacing=(float(z[f"{i}.pixel_spacing"][0]), float(z[f"{i}.pixel_spacing"][1])),
        positions=np.asarray(z[f"{i}.positions"], float),
        frames=tuple(FrameRef(f"{UID_ROOT}.{i}.{k + 1}", "1.2.840.10008.5.1.4.1.1.2") for k in range(array.shape[0])),
        frame_of_reference_uid=f"{UID_ROOT}.{i}.0",
        slice_thickness=thickness or None,
    )
    wml = z.get(f"{i}.wml_ml")
    bleeds = z.get(f"{i}.bleeds_mm")
    return ReferenceCase(volume, None if wml is None else float(wml),
                         None if bleeds is None else np.asarray(bleeds, float).reshape(-1, 3))


def save(path: Path, cases: Sequence[ReferenceCase], steps: Sequence[float]) -> None:
    """Write ``cases``, each volume rounded to its step (1.0: whole HU, stored as they are; else steps above
    the volume's minimum), as int16. Refuses a step so fine that the volume does not fit in int16."""
    arrays: dict[str, np.ndarray] = {"cases": np.asarray(len(cases))}
    for i, (case, step) in enumerate(zip(cases, steps, strict=True)):
        v = case.volume
        lo, hi = float(v.array.min()), float(v.array.max())
        intercept = 0.0 if step == 1.0 else float(np.floor(lo / step) * step)
        stored = np.rint((np.asarray(v.array, np.float64) - intercept) / step)
        if stored.min() < INT16.min or stored.max() > INT16.max:
            raise ValueError(f"case {i}: step {step} is too fine for int16 over {lo:g}..{hi:g}")
        high, low = np.divmod(stored.astype(np.int32), 256)
        arrays.update({
            f"{i}.high": high.astype(np.int8), f"{i}.low": low.astype(np.uint8),
            f"{i}.slope": np.asarray(step), f"{i}.intercept": np.asarray(intercept),
            f"{i}.positions": np.asarray(v.positions, float),
            f"{i}.row_direction": np.asarray(v.row_direction, float),
            f"{i}.column_direction": np.asarray(v.column_direction, float),
            f"{i}.pixel_spacing": np.asarray(v.pixel_spacing, float),
            f"{i}.slice_thickness": np.asarray(float(v.slice_thickness or 0.0)),
        })
        if case.wml_ml is not None:
            arrays[f"{i}.wml_ml"] = np.asarray(float(case.wml_ml))
        if case.bleeds_mm is not None:
            arrays[f"{i}.bleeds_mm"] = np.asarray(case.bleeds_mm, float).reshape(-1, 3)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
