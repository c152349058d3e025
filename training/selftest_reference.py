"""Write a model version's self-test reference (``selftest.npz``, see ``svdmark.infer.reference``) from the
phantom cases its manifest names, and name it in the manifest (``self_test.reference``).

    PYTHONPATH=. .venv/bin/python -m training.selftest_reference                 # every packaged version lacking one
    PYTHONPATH=. .venv/bin/python -m training.selftest_reference MODEL_DIR ... [--force]
    PYTHONPATH=. .venv/bin/python -m training.selftest_reference --share     # after adding a packaged version

Run once per model version (``training.model_card`` does it for a new one, beside ``model.onnx``, with its SHA-256
in the manifest); ``--share`` then moves the packaged references into each model's shared store, where versions
tested on the same phantoms keep one copy. The service's self-test needs no generator. Today's cases
(``self_test.cases``, or ``kwargs`` for one) are rendered with ``svdmark_phantom``, then stored as int16 at the
precision a scanner gives them: whole HU for CT; for SWI a step of half the phantom's noise SD. Air well outside
the head (``MARGIN_VOX`` from anything above the noise floor) is set to one value: it is noise the models never
see (outside the CT window, outside the SWI foreground) and would be most of each file otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from svdmark.infer import reference
from svdmark.infer.reference import ReferenceCase
from svdmark.infer.registry import sha256_file

REFERENCE = "selftest.npz"
MODELS = Path(__file__).resolve().parents[1] / "service" / "svdmark" / "data" / "models"
MARGIN_VOX = 3  # air kept as generated within this many voxels of the head
CT_BODY_HU = -500.0  # smoothed CT above this is head (or head holder)
SWI_BODY_SD = 5.0  # smoothed SWI above this many noise SDs is head (Rician air averages 1.25 SD)
SWI_STEP_SD = 0.5  # SWI stored in steps of half the noise SD


def cases_of(self_test: dict) -> list[dict]:
    """The generator arguments of each case: ``cases``, or the one ``kwargs``."""
    return list(self_test.get("cases") or [self_test["kwargs"]])


def _outside_head(image: np.ndarray, body_level: float) -> np.ndarray:
    body = ndimage.binary_fill_holes(ndimage.gaussian_filter(image, 1.5) > body_level)
    return ~ndimage.binary_dilation(body, iterations=MARGIN_VOX)


def reference_case(ph) -> tuple[ReferenceCase, float]:
    """A phantom as a reference case (its air outside the head set to one value) and its storage step."""
    from dataclasses import replace

    from svdmark_phantom import as_volume

    volume = as_volume(ph)
    if ph.modality == "CT":
        air, step, truth = _outside_head(volume.array, CT_BODY_HU), 1.0, {"wml_ml": float(ph.truth_wml_ml)}
        fill = -1000.0
    else:
        sd = float(ph.meta["noise_sd"])
        air, step = _outside_head(volume.array, SWI_BODY_SD * sd), SWI_STEP_SD * sd
        fill = float(np.median(volume.array[air])) if air.any() else 0.0
        truth = {"bleeds_mm": np.array([b[0] for b in ph.microbleeds], float).reshape(-1, 3)}
    array = np.where(air, np.float32(fill), volume.array).astype(np.float32)
    return ReferenceCase(replace(volume, array=array), **truth), step


def build(self_test: dict, path: Path) -> None:
    """Render the manifest's cases and write them to ``path``."""
    import svdmark_phantom

    generate = getattr(svdmark_phantom, self_test["generator"])
    made = [reference_case(generate(**kwargs)) for kwargs in cases_of(self_test)]
    reference.save(path, [case for case, _ in made], [step for _, step in made])


def write(model_dir: Path, force: bool = False) -> Path | None:
    """Write ``model_dir``'s reference unless it exists (or ``force``) and name it in the manifest; None when
    the manifest has no self-test."""
    mpath = Path(model_dir) / "manifest.json"
    manifest = json.loads(mpath.read_text())
    self_test = manifest.get("self_test")
    if not self_test:
        return None
    path = None if force else _located(Path(model_dir), self_test)  # --force repairs a stale or corrupt one too
    if path is None:
        path = Path(model_dir) / REFERENCE
        build(self_test, path)
    sha = sha256_file(path)
    if (self_test.get("reference"), self_test.get("reference_sha256")) != (REFERENCE, sha):
        self_test.update(reference=REFERENCE, reference_sha256=sha)
        mpath.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def _located(model_dir: Path, self_test: dict) -> Path | None:
    """The version's reference, beside it or in its model's shared store (checked); None when it has none yet."""
    name, sha = self_test.get("reference"), self_test.get("reference_sha256")
    if not name or reference.find(model_dir, name, sha) is None:
        return None
    return reference.locate(model_dir, name, sha)


def share(models: Path) -> list[str]:
    """Move every version's reference that lies beside its model into the model's shared store
    (``<model>/references/<sha256>.npz``, ``svdmark.infer.reference``), naming it by its SHA-256 in the manifest;
    a reference the store already holds is removed from the version. Returns one line per version moved."""
    done = []
    for mpath in sorted(Path(models).glob("*/*/manifest.json")):
        manifest = json.loads(mpath.read_text())
        self_test = manifest.get("self_test") or {}
        beside = mpath.parent / str(self_test.get("reference") or REFERENCE)
        if not self_test.get("reference") or not beside.is_file():
            continue
        sha = sha256_file(beside)
        if self_test.get("reference_sha256") not in (None, sha):
            named = self_test["reference_sha256"]
            raise ValueError(f"{beside}: sha256 {sha[:12]}… is not the manifest's {named[:12]}…")
        shared = mpath.parent.parent / reference.STORE / f"{sha}.npz"
        if shared.is_file():
            if sha256_file(shared) != sha:
                raise ValueError(f"{shared} does not hold what its name says")
            beside.unlink()
        else:
            shared.parent.mkdir(exist_ok=True)
            os.replace(beside, shared)
        if self_test.get("reference_sha256") != sha:
            self_test["reference_sha256"] = sha
            mpath.write_text(json.dumps(manifest, indent=2) + "\n")
        done.append(f"{mpath.parent}: {beside.name} -> {shared.relative_to(Path(models))}")
    return done


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dirs", type=Path, nargs="*", help="model version folders (default: every packaged one)")
    ap.add_argument("--force", action="store_true", help="rewrite an existing reference")
    ap.add_argument("--share", action="store_true",
                    help="then move the packaged versions' references into each model's shared store")
    args = ap.parse_args(argv)
    for model_dir in args.model_dirs or sorted(p.parent for p in MODELS.glob("*/*/manifest.json")):
        path = write(model_dir, force=args.force)
        print(f"{model_dir}: {'no self-test' if path is None else f'{path.name} {path.stat().st_size / 1e6:.2f} MB'}")
    if args.share:
        print("\n".join(share(MODELS)))


if __name__ == "__main__":
    main()
