"""Training / evaluation cases from ``svdmark_phantom``, cached under ``training/cache/``.

Each case is drawn from a seed: the acquisition (matrix, slice thickness,
tilt), the lesion load and the mimics are all functions of the seed, so a
split is just a seed range:

* ``train``   seeds 1000 ..      (models are fitted here; analytic head)
* ``train_atlas`` seeds 3000 ..  (the same draws on the MNI152 atlas head; fitted here too)
* ``val``     seeds 5000 ..      (threshold / early-stopping choices; analytic head)
* ``val_atlas`` seeds 6000 ..    (the same draws on the atlas head; choices too)
* ``val_thin`` seeds 5500 ..     (NCCT: new seeds drawn as ``val`` but with thin slices, 0.625–1.25 mm, which
  training never sees; the runtime's thin-stack averaging, ``input.min_slice_mm``, is chosen here; ``val`` itself
  must stay under 500 cases)
* ``heldout`` seeds 900000 ..    (reported figures only; never looked at while training)
* ``heldout_b`` seeds 900500 ..  (a second held-out split, drawn as ``heldout``; first used 2026-12-02)
* ``shifted`` seeds 700000 ..    (a stand-in for a phantom set built differently: MNI152 atlas
  anatomy instead of the analytic head, other noise, field-of-view and acquisition draws, and the
  images go through DICOM in a vendor's header style and back through ``svdmark.volume.load``;
  reported figures only, never trained or tuned on)
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svdmark.domain import Volume
from svdmark_phantom import as_volume

CACHE = Path(os.environ.get("SVDMARK_TRAIN_CACHE", Path(__file__).resolve().parent / "cache"))
RUNS = Path(__file__).resolve().parent / "runs"  # what every training command writes: runs, checkpoints, states
# heldout_b: a second held-out split, drawn as heldout (training/README.md)
SPLITS = {"train": 1000, "train_atlas": 3000, "val": 5000, "val_thin": 5500, "val_atlas": 6000, "shifted": 700000,
          "heldout": 900000, "heldout_b": 900500}
VENDORS = ("siemens", "ge", "philips", "canon")
ATROPHY_SHARE = float(os.environ.get("SVDMARK_TRAIN_ATROPHY", "0"))  # of atlas SWI seeds (swi_params)
NCCT_ATROPHY_SHARE = float(os.environ.get("SVDMARK_TRAIN_ATROPHY_NCCT", "0"))  # of atlas NCCT seeds (ncct_params)
WML_SPREAD_SHARE = float(os.environ.get("SVDMARK_TRAIN_WML_SPREAD", "0"))  # of train/val NCCT seeds (ncct_params)
WML_RIM_SHARE = float(os.environ.get("SVDMARK_TRAIN_WML_RIMS", "0"))  # of train/val NCCT seeds (ncct_params)
WML_GRADED_SHARE = float(os.environ.get("SVDMARK_TRAIN_WML_GRADED", "0"))  # of train/val NCCT seeds (ncct_params)
INDEPENDENT_SHARE = float(os.environ.get("SVDMARK_TRAIN_INDEPENDENT_NCCT", "0"))  # of train/val NCCT seeds
SWI_MIMIC_SHARE = float(os.environ.get("SVDMARK_TRAIN_SWI_MIMICS", "0"))  # of train/val SWI seeds (swi_params)
SWI_BLOOMING_SHARE = float(os.environ.get("SVDMARK_TRAIN_SWI_BLOOMING", "0"))  # of train/val SWI seeds (swi_params)
SYNTH_CT_SHARE = float(os.environ.get("SVDMARK_TRAIN_SYNTH_CT", "0"))  # of train/val NCCT seeds drawn by synth_ct


def training_environment() -> dict:
    """The ``SVDMARK_TRAIN_*`` variables that change the draws: a model's recipe records them with its command."""
    return {k: v for k, v in sorted(os.environ.items())
            if k.startswith("SVDMARK_TRAIN_") and k != "SVDMARK_TRAIN_CACHE"}


def drawn_split_name(split: str, n: int) -> str:
    """``split`` and ``n`` with the ``SVDMARK_TRAIN_*`` shares that drew its heads, e.g. ``val_12_synth_ct1``: the
    name of a probe's run file, so runs on the same seeds drawn by other shares do not overwrite each other."""
    return "_".join([f"{split}_{n}"] + [f"{k.removeprefix('SVDMARK_TRAIN_').lower()}{v}"
                                        for k, v in training_environment().items()])


def _atrophy(seed: int, stream: int, share: float) -> float | None:
    """An atrophy from U(0.1, 1.0) for ``share`` of the seeds, drawn from the seed's own ``stream``; None for the
    rest (their cache names do not change)."""
    aged = np.random.default_rng([seed, stream])
    return round(float(aged.uniform(0.1, 1.0)), 2) if aged.random() < share else None


def is_shifted(seed: int) -> bool:
    return SPLITS["shifted"] <= seed < SPLITS["heldout"]


def is_thin(seed: int) -> bool:
    """``val_thin``: NCCT stacks of 0.625–1.25 mm slices (seeds 5500–5999)."""
    return SPLITS["val_thin"] <= seed < SPLITS["val_atlas"]


def is_atlas(seed: int) -> bool:
    """``train_atlas`` / ``val_atlas``: the training draws, rendered on the MNI152 atlas head."""
    return SPLITS["train_atlas"] <= seed < SPLITS["val"] or SPLITS["val_atlas"] <= seed < SPLITS["shifted"]


def seeds(split: str, n: int) -> list[int]:
    base = SPLITS[split]
    return list(range(base, base + n))


# --------------------------------------------------------------------------- acquisition draws


def ncct_params(seed: int) -> dict:
    rng = np.random.default_rng([seed, 11])
    matrix = int(rng.choice([256, 320, 384, 512], p=[0.55, 0.15, 0.1, 0.2]))
    thickness = float(rng.choice([2.5, 3.0, 4.0, 5.0], p=[0.2, 0.2, 0.2, 0.4]))
    tilt = float(rng.choice([0.0, rng.uniform(-25, 25)], p=[0.5, 0.5]))
    # lesion load: many small (trial median 0.59 mL), a tail up to ~50 mL, some zero
    u = rng.uniform()
    if u < 0.12:
        wml = 0.0
    elif u < 0.6:
        wml = float(np.exp(rng.uniform(np.log(0.1), np.log(3.0))))
    else:
        wml = float(np.exp(rng.uniform(np.log(3.0), np.log(50.0))))
    params = dict(seed=seed, matrix=matrix, slice_thickness=thickness, tilt_deg=round(tilt, 1), wml_ml=round(wml, 3),
                  mimics=bool(rng.uniform() < 0.8))
    if is_atlas(seed):  # only here: the cache names of the analytic cases stay what they were
        params["anatomy"] = "mni152"
        # atrophic atlas heads (ventricles and sulci widened) in a share of seeds, from a stream of their own; off
        # unless $SVDMARK_TRAIN_ATROPHY_NCCT names the share (the stress set's false positives grow with the
        # ventricles: training/preregistered/2026-12-02-wml-atrophy.md); the held-out and shifted draws never change
        if (atrophy := _atrophy(seed, 14, NCCT_ATROPHY_SHARE)) is not None:
            params["atrophy"] = atrophy
    # deep lesions anywhere in the white matter (not only the centrum semiovale) for a share of the training and
    # validation seeds with lesion, from a stream of their own; off unless $SVDMARK_TRAIN_WML_SPREAD names the share
    # (training/preregistered/2026-12-02-wml-spread.md); the held-out, shifted and thin draws never change
    if wml > 0 and seed < SPLITS["shifted"] and not is_thin(seed) \
            and np.random.default_rng([seed, 15]).random() < WML_SPREAD_SHARE:
        params["wml_spread"] = True
    # periventricular rims along the ventricle walls (phantom.lesions.add_rims) for a share of the training and
    # validation seeds with lesion, from a stream of their own; off unless $SVDMARK_TRAIN_WML_RIMS names the share
    # (training/preregistered/2026-12-03-wml-rims.md); the held-out, shifted and thin draws never change
    if wml > 0 and seed < SPLITS["shifted"] and not is_thin(seed) \
            and np.random.default_rng([seed, 16]).random() < WML_RIM_SHARE:
        params["wml_rims"] = True
    # graded lesions (phantom.lesions.draw_grade: a faint label edge, a dark core, an unlabelled fading tail) for a
    # share of the training and validation seeds with lesion, from a stream of their own; off unless
    # $SVDMARK_TRAIN_WML_GRADED names the share (training/preregistered/2026-12-06-wml-graded.md)
    if wml > 0 and seed < SPLITS["shifted"] and not is_thin(seed) \
            and np.random.default_rng([seed, 19]).random() < WML_GRADED_SHARE:
        params["wml_graded"] = True
    # brain tissue intensities and lesion contrast drawn independently and wide (svdmark_phantom.intensities) for a
    # share of the training and validation seeds, from a stream of their own; off unless
    # $SVDMARK_TRAIN_INDEPENDENT_NCCT names the share (training/preregistered/2026-12-04-wml-independent.md)
    if seed < SPLITS["shifted"] and not is_thin(seed) \
            and np.random.default_rng([seed, 17]).random() < INDEPENDENT_SHARE:
        params["independent"] = True
    if is_thin(seed):  # a stream of its own: every other draw is what the seed gives
        params["slice_thickness"] = float(np.random.default_rng([seed, 12]).choice([0.625, 1.0, 1.25]))
    # the head drawn by the second generator, training.synth_ct (other code: its own anatomy, lesions and scanner),
    # for a share of the training and validation seeds, from a stream of their own; off unless
    # $SVDMARK_TRAIN_SYNTH_CT names the share. The acquisition and the load are the seed's; our generator's own
    # options (anatomy, atrophy, mimics, spread, rims, graded, independent) mean nothing to it and are dropped
    if seed < SPLITS["shifted"] and not is_thin(seed) \
            and np.random.default_rng([seed, 18]).random() < SYNTH_CT_SHARE:
        params = {k: params[k] for k in ("seed", "matrix", "slice_thickness", "tilt_deg", "wml_ml")}
        params["generator"] = "synth_ct"
    if is_shifted(seed):  # other draws than training saw (the keys exist only here: cache names stay stable)
        params.update(anatomy="mni152", noise_hu=round(float(rng.uniform(2.0, 6.0)), 2),
                      fov_mm=round(float(rng.uniform(200, 260)), 1), vendor=str(rng.choice(VENDORS)))
    return params


def swi_params(seed: int) -> dict:
    rng = np.random.default_rng([seed, 22])
    matrix = int(rng.choice([192, 256, 320, 384], p=[0.3, 0.45, 0.15, 0.1]))
    thickness = float(rng.choice([1.0, 1.5, 2.0, 2.5], p=[0.15, 0.3, 0.3, 0.25]))
    g = rng.uniform()
    if g < 0.2:
        n = 0
    elif g < 0.6:
        n = int(rng.integers(1, 10))
    elif g < 0.85:
        n = int(rng.integers(10, 31))
    else:
        n = int(rng.integers(31, 60))
    params = dict(seed=seed, matrix=matrix, slice_thickness=thickness, n_cmb=n)
    # cmb-swi 1.4.0 on: a 1.5 T look and physiological calcifications, from a stream of their own (the draws
    # above are the same as before for every seed); named only when not the generator's default
    look = np.random.default_rng([seed, 23])
    if look.random() < 0.35:
        params["field_t"] = 1.5
    if look.random() < 0.5:
        params["calcifications"] = True
    if is_atlas(seed):
        params["anatomy"] = "mni152"
    if is_shifted(seed):
        params.update(anatomy="mni152", noise=round(float(rng.uniform(0.015, 0.055)), 4),
                      fov_mm=round(float(rng.uniform(200, 250)), 1), vendor=str(rng.choice(VENDORS)))
    # the atlas head atrophic in a share of seeds (widened sulci and ventricles, sulci of its own), from its own
    # stream; off unless $SVDMARK_TRAIN_ATROPHY names the share: the cmb-swi 1.5.0 experiment used 0.75 and was
    # not shipped (training/README.md), so the active models' recipes draw none
    if params.get("anatomy") == "mni152" and (atrophy := _atrophy(seed, 24, ATROPHY_SHARE)) is not None:
        params["atrophy"] = atrophy
    # calcifications and iron-rich nuclei drawn far wider (make_swi(mimic_variety=True)) for a share of the training
    # and validation seeds, from a stream of their own; off unless $SVDMARK_TRAIN_SWI_MIMICS names the share
    # (training/preregistered/2026-12-05-cmb-mimic-variety.md); the held-out and shifted draws never change
    if seed < SPLITS["shifted"] and np.random.default_rng([seed, 25]).random() < SWI_MIMIC_SHARE:
        params["mimic_variety"] = True
    # bleeds darkened by the dipole falloff (make_swi(blooming=True)) for a share of the training and validation
    # seeds, from a stream of their own; off unless $SVDMARK_TRAIN_SWI_BLOOMING names the share
    # (training/preregistered/2026-12-05-cmb-dipole-blooming.md); the held-out and shifted draws never change
    if seed < SPLITS["shifted"] and np.random.default_rng([seed, 26]).random() < SWI_BLOOMING_SHARE:
        params["blooming"] = True
    return params


# --------------------------------------------------------------------------- cases


@dataclass
class NcctCase:
    seed: int
    params: dict
    volume: Volume
    truth_fraction: np.ndarray  # (z, y, x) float32 lesion fraction on the source grid
    truth_ml: float
    contrast_hu: float | None = None  # the generator's full lesion contrast (HU); None in caches written before it
    wm_fraction: np.ndarray | None = None  # (z, y, x) white-matter fraction on the source grid; None in older caches


@dataclass
class SwiCase:
    seed: int
    params: dict
    volume: Volume
    bleeds: list  # dicts: center_mm, diameter_mm, location
    truth_mask: np.ndarray | None


def _save(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _volume_arrays(vol: Volume) -> dict:
    return dict(
        image=vol.array.astype(np.float32), positions=vol.positions, spacing=np.asarray(vol.pixel_spacing),
        rowdir=np.asarray(vol.row_direction), coldir=np.asarray(vol.column_direction),
        thickness=np.asarray(vol.slice_thickness or 0.0),
    )


def _volume_from(z) -> Volume:
    class P:  # duck-typed phantom for as_volume
        pass

    p = P()
    p.image = z["image"]
    p.positions = z["positions"]
    p.pixel_spacing = tuple(z["spacing"])
    p.row_direction = tuple(z["rowdir"])
    p.column_direction = tuple(z["coldir"])
    p.slice_thickness = float(z["thickness"])
    return as_volume(p)


def _phantom_version(generator: str | None = None) -> str:
    """Hash of the generator's sources (``svdmark_phantom``, or ``training.synth_ct``), stored with each cached case
    (the cache key is the parameters only; delete ``training/cache/`` after a generator change to regenerate)."""
    import hashlib

    import svdmark_phantom as ph

    where = Path(__file__).resolve().parent / "synth_ct" if generator == "synth_ct" else Path(ph.__file__).parent
    h = hashlib.sha256()
    for f in sorted(where.glob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def _through_dicom(ph, vendor: str) -> tuple[Volume, np.ndarray]:
    """Write ``ph`` as a DICOM series in ``vendor``'s header style, load it back with ``svdmark.volume.load``;
    returns the volume and, per loaded slice, the index of the phantom slice it came from."""
    import tempfile

    import pydicom

    from svdmark import volume as vol_mod
    from svdmark.domain import Series
    from svdmark_phantom import write_series

    with tempfile.TemporaryDirectory() as d:
        paths = write_series(ph, d, vendor=vendor)
        datasets = tuple(pydicom.dcmread(p) for p in paths)
        vol = vol_mod.load(Series(datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID, datasets))
    src = np.asarray(ph.positions, float)
    order = np.array([int(np.argmin(np.linalg.norm(src - p, axis=1))) for p in vol.positions])
    if not np.allclose(src[order], vol.positions, atol=0.01) or len(set(order)) != len(order):
        raise RuntimeError("DICOM round trip changed the slice geometry")
    return vol, order


def _generator_kwargs(params: dict) -> dict:
    """The phantom generator's arguments: the case parameters less ``vendor`` (which is the writer's)."""
    return {k: v for k, v in params.items() if k != "vendor"}


def _case_volume(ph, params: dict) -> tuple[Volume, np.ndarray]:
    """The volume a case is scored on, and per slice the phantom slice it came from: through DICOM in
    ``params["vendor"]``'s style when the split names one, else the phantom's own grid."""
    if "vendor" in params:
        return _through_dicom(ph, params["vendor"])
    return as_volume(ph), np.arange(ph.image.shape[0])


def _make_ncct_with_fraction(params: dict):
    """``phantom.make_ncct`` (with its white-matter map), or ``synth_ct.make_ncct`` where the parameters name that
    generator, and its per-voxel WML partial-volume fraction (``Phantom.aux["wml_fraction"]``, the occupancy whose
    ≥ 50 % cut is ``truth_mask``)."""
    if params.get("generator") == "synth_ct":
        from .synth_ct import make_ncct

        ph = make_ncct(params["seed"], matrix=params["matrix"], slice_thickness=params["slice_thickness"],
                       gantry_tilt_deg=params["tilt_deg"], wml_ml=params["wml_ml"])
    else:
        import svdmark_phantom as phantom

        ph = phantom.make_ncct(**params, wm_map=True)
    frac = ph.aux.get("wml_fraction")
    if frac is None or frac.shape != ph.image.shape:
        raise RuntimeError(f"{params.get('generator', 'svdmark_phantom')}.make_ncct did not provide "
                           "aux['wml_fraction'] on the image grid")
    return ph, np.asarray(frac, np.float32)


def is_cached(kind: str, seed: int) -> bool:
    params = ncct_params(seed) if kind == "ncct" else swi_params(seed)
    return (CACHE / (f"{kind}_" + "_".join(f"{k}{v}" for k, v in sorted(params.items())) + ".npz")).exists()


def ncct_case(seed: int, params: dict | None = None, with_wm: bool = False) -> NcctCase:
    """One NCCT case, from the cache where it is there; ``with_wm``: with its white-matter map (a case cached before
    the map was stored is generated again, refused unless image and truth come out as cached, and cached with it)."""
    params = params or ncct_params(seed)
    key = "ncct_" + "_".join(f"{k}{v}" for k, v in sorted(params.items()))
    path = CACHE / f"{key}.npz"
    cached = None
    if path.exists():
        with np.load(path) as z:
            if not with_wm or "wm" in z.files:
                contrast = float(z["contrast_hu"]) if "contrast_hu" in z.files else None
                truth = z["truth"].astype(np.float32)
                wm = z["wm"].astype(np.float32) if with_wm else None
                return NcctCase(seed, params, _volume_from(z), truth, float(z["truth_ml"]), contrast, wm)
            cached = z["image"], z["truth"]
    ph, truth = _make_ncct_with_fraction(_generator_kwargs(params))
    vol, order = _case_volume(ph, params)
    truth = truth[order]
    if cached is not None and not (np.array_equal(cached[0], vol.array.astype(np.float32))
                                   and np.array_equal(cached[1], truth.astype(np.float16))):
        raise RuntimeError(f"{path.name}: the generator no longer draws the cached case (another phantom_version); "
                           "delete training/cache/ and generate it again")
    wm = np.asarray(ph.aux["wm_fraction"], np.float32)[order]
    contrast = float(ph.meta["wml_contrast_hu"])
    _save(path, truth=truth.astype(np.float16), truth_ml=np.asarray(ph.truth_wml_ml), contrast_hu=np.asarray(contrast),
          wm=wm.astype(np.float16), phantom_version=np.asarray(_phantom_version(params.get("generator"))),
          **_volume_arrays(vol))
    return NcctCase(seed, params, vol, truth, float(ph.truth_wml_ml), contrast, wm if with_wm else None)


def swi_case(seed: int, params: dict | None = None) -> SwiCase:
    params = params or swi_params(seed)
    key = "swi_" + "_".join(f"{k}{v}" for k, v in sorted(params.items()))
    path = CACHE / f"{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            bleeds = [dict(center_mm=tuple(c), diameter_mm=float(d), location=str(l))
                      for c, d, l in zip(z["centers"].reshape(-1, 3), z["diams"], z["locs"])]
            return SwiCase(seed, params, _volume_from(z), bleeds, None)
    import svdmark_phantom as phantom

    ph = phantom.make_swi(**_generator_kwargs(params))
    vol = _case_volume(ph, params)[0]
    bleeds = [dict(center_mm=tuple(float(v) for v in c), diameter_mm=float(d), location=str(loc))
              for c, d, loc in ph.microbleeds]
    _save(path, centers=np.array([b["center_mm"] for b in bleeds], float).reshape(-1, 3),
          diams=np.array([b["diameter_mm"] for b in bleeds], float),
          locs=np.array([b["location"] for b in bleeds], dtype="U16"), phantom_version=np.asarray(_phantom_version()),
          **_volume_arrays(vol))
    return SwiCase(seed, params, vol, bleeds, None)


def generate(kind: str, split: str, n: int, workers: int = 1) -> None:
    """Fill the cache (``python -m training.data ncct train 120``); NCCT cases with their white-matter map."""
    fn = functools.partial(ncct_case, with_wm=True) if kind == "ncct" else swi_case
    todo = seeds(split, n)
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as ex:
            list(ex.map(fn, todo))
    else:
        for s in todo:
            fn(s)


if __name__ == "__main__":  # pragma: no cover
    import sys
    import time

    t = time.time()
    generate(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    print(f"done in {time.time() - t:.0f} s")
