"""training.symmetry: the head's mid-sagittal plane from the image, and mirror twins of microbleed candidates."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from svdmark.infer.preprocess import index_affine

from .test_cmb_darkness import REF
from .test_measure import tilted_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training.symmetry import Plane, midsagittal_plane, mirror_partnered, without_mirror_twins  # noqa: E402

CENTRE = np.array([4.0, -3.0, 2.0])  # a point of the true plane of symmetry (patient mm)


def _basis(yaw_deg: float, roll_deg: float) -> np.ndarray:
    """Rows: the head's left-right axis (the plane's normal), then two axes within the plane."""
    y, r = np.radians(yaw_deg), np.radians(roll_deg)
    e1 = np.array([np.cos(y) * np.cos(r), np.sin(y) * np.cos(r), np.sin(r)])
    e2 = np.cross([0.0, 0.0, 1.0], e1)
    e2 /= np.linalg.norm(e2)
    return np.stack([e1, e2, np.cross(e1, e2)])


def _ellipsoid(u, c, r):
    return (((u - np.asarray(c, float)) / np.asarray(r, float)) ** 2).sum(axis=-1) <= 1.0


def _head(yaw_deg=7.0, roll_deg=-4.0, lesion=True):
    """An axial stack (2 mm pixels, 3 mm slices) of a head symmetric about the plane through ``CENTRE`` with normal
    ``_basis(...)[0]``: scalp, brain, ventricles, dark pallida and dentate nuclei in pairs, and (``lesion``) a large
    grey lesion on one side only."""
    shape = (48, 104, 84)
    vol = tilted_volume(shape, pixel=2.0, spacing=3.0, tilt_deg=0.0, origin=(-84.0, -104.0, -72.0))
    kij = np.stack(np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij"), -1)
    u = ((kij @ index_affine(vol).T + vol.positions[0]) - CENTRE) @ _basis(yaw_deg, roll_deg).T
    arr = np.zeros(shape, np.float32)
    arr[_ellipsoid(u, (0, 0, 0), (72, 92, 64))] = 0.8 * REF
    arr[_ellipsoid(u, (0, 0, 0), (64, 84, 56))] = REF
    for side in (-1, 1):
        arr[_ellipsoid(u, (side * 9, -6, 12), (5, 22, 9))] = 1.6 * REF
        arr[_ellipsoid(u, (side * 20, -14, 0), (4, 6, 4))] = 0.15 * REF
        arr[_ellipsoid(u, (side * 16, 42, -30), (5, 7, 5))] = 0.3 * REF
    if lesion:
        arr[_ellipsoid(u, (34, 10, 22), (10, 14, 10))] = 0.6 * REF
    return tilted_volume(shape, pixel=2.0, spacing=3.0, tilt_deg=0.0, origin=(-84.0, -104.0, -72.0), array=arr)


def _in_patient(yaw_deg, roll_deg, u):
    return CENTRE + np.asarray(u, float) @ _basis(yaw_deg, roll_deg)


@pytest.mark.parametrize("yaw,roll", [(0.0, 0.0), (7.0, -4.0), (-12.0, 3.0)])
def test_the_plane_of_symmetry_is_found_despite_a_lesion_on_one_side(yaw, roll):
    plane = midsagittal_plane(_head(yaw, roll))
    n_true = _basis(yaw, roll)[0]
    angle = np.degrees(np.arccos(min(1.0, abs(float(np.dot(plane.normal, n_true))))))
    assert angle < 1.5
    assert float(np.dot(plane.normal, n_true)) > 0 and plane.offset == pytest.approx(float(n_true @ CENTRE), abs=1.0)
    left, right = _in_patient(yaw, roll, (-20, -14, 0)), _in_patient(yaw, roll, (20, -14, 0))
    assert np.linalg.norm(plane.reflect(left) - right) < 2.0
    assert plane.correlation > 0.9


def test_no_plane_without_a_head():
    vol = _head()
    empty = tilted_volume(vol.shape, pixel=2.0, spacing=3.0, tilt_deg=0.0, array=np.zeros(vol.shape, np.float32))
    assert midsagittal_plane(empty) is None


def test_a_twin_lies_near_the_mirror_image_and_away_from_the_focus_itself():
    plane = Plane((1.0, 0.0, 0.0), 0.0, 1.0)  # the plane x = 0
    centres = [(20.0, 5.0, 0.0), (20.0, 5.0, 0.0), (1.0, 0.0, 0.0)]
    assert list(mirror_partnered(plane, centres[:1], [(-21.5, 6.0, 1.0)], 3.0)) == [True]
    assert list(mirror_partnered(plane, centres[:1], [(-24.0, 5.0, 0.0)], 3.0)) == [False]  # 4 mm from the image
    # a focus on the midline is its own mirror image: the focus itself (or a duplicate of it) is not a twin
    assert list(mirror_partnered(plane, centres[2:], [(1.0, 0.0, 0.0), (-0.5, 0.0, 0.0)], 3.0)) == [False]
    assert not mirror_partnered(plane, centres, [], 3.0).any() and len(mirror_partnered(plane, [], centres, 3.0)) == 0


def test_candidates_with_a_mirror_twin_are_dropped():
    yaw, roll = 7.0, -4.0
    vol = _head(yaw, roll, lesion=False)
    m_inv = np.linalg.inv(index_affine(vol))

    def cand(u, p):
        return (tuple(float(v) for v in m_inv @ (_in_patient(yaw, roll, u) - vol.positions[0])), p, 3.0)

    pall_l, pall_r = cand((-20, -14, 0), 0.999), cand((20, -14, 0), 0.95)
    lone = cand((30, 20, 20), 0.999)  # a bleed whose mirror image holds only ...
    weak = cand((-30, 20, 20), 0.5)  # ... a weak candidate, below a twin's probability (but the bleed is its twin)
    cands = [pall_l, pall_r, lone, weak]
    assert without_mirror_twins(vol, cands, 5.0, 0.9) == [lone]
    assert without_mirror_twins(vol, cands, 5.0, 0.5) == []  # a twin at 0.5 counts: all four are pairs
    assert without_mirror_twins(vol, [weak], 5.0, 0.9) == [weak]  # no candidate could be a twin: no plane needed
