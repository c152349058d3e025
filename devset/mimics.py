"""Unlabelled look-alikes painted into the template before lesions are drawn (lesions never overlap them):
lacunes, old cortical/cerebellar infarcts, enlarged perivascular spaces and physiological calcifications
(pineal, choroid plexus glomus, pallidum, falx). Each returns a dict for ``truth.json``'s ``mimics``.
"""
from __future__ import annotations

import numpy as np

from devset import anatomy as A
from devset.fields import random_rotation, smooth_field

PARENCHYMA = (A.WM, A.CAUD, A.PUT, A.PALL, A.THAL)


def _mm(ph: A.Phantom, idx) -> list[float]:
    g = ph.grid
    return [round(float(g.origin[k] + g.h * idx[2 - k]), 1) for k in range(3)]


def _pick(rng, mask: np.ndarray):
    cand = np.flatnonzero(mask)
    if cand.size == 0:
        return None
    return np.array(np.unravel_index(int(rng.choice(cand)), mask.shape))


def _local(ph: A.Phantom, centre_idx, radius_mm: float):
    """Slices around a voxel and local offset arrays (mm) dz, dy, dx."""
    g = ph.grid
    r = int(np.ceil(radius_mm / g.h)) + 1
    sl = tuple(slice(max(int(c) - r, 0), min(int(c) + r + 1, n)) for c, n in zip(centre_idx, g.shape))
    zz, yy, xx = np.meshgrid(*[(np.arange(s.start, s.stop) - c) * g.h for s, c in zip(sl, centre_idx)],
                             indexing="ij")
    return sl, np.stack([xx, yy, zz], axis=-1).astype(np.float32)


def _paint(ph, sl, m, label, value, allowed):
    lab = ph.labels[sl]
    m = m & np.isin(lab, allowed)
    lab[m] = label
    ph.hu[sl][m] = value
    return int(m.sum())


def add(rng: np.random.Generator, ph: A.Phantom, burden: float) -> list[dict]:
    """Paint mimics; ``burden`` (0..1) raises the count of small-vessel look-alikes (lacunes, EPVS)."""
    t = ph.tissue
    h = ph.grid.h
    out: list[dict] = []
    # lacunes: 3-15 mm CSF-like cavities in deep grey or white matter
    for _ in range(int(min(5, rng.poisson(0.3 + 1.5 * burden)))):
        where = (A.PUT, A.THAL, A.CAUD) if rng.random() < 0.55 else (A.WM,)
        c = _pick(rng, np.isin(ph.labels, where))
        if c is None:
            continue
        r = rng.uniform(1.5, 6.5) * np.array([1.0, rng.uniform(0.5, 1.0), rng.uniform(0.4, 0.9)])
        sl, d = _local(ph, c, r.max() + 2)
        rot = random_rotation(rng)
        q = (d @ rot) / r
        rough = 0.15 * rng.standard_normal(q.shape[:-1])
        m = (q * q).sum(-1) < (1.0 + rough)
        n = _paint(ph, sl, m, A.LACUNE, t["csf"] + rng.uniform(0.0, 6.0), PARENCHYMA)
        if n:
            out.append(dict(kind="lacune", centre_mm=_mm(ph, c), diameter_mm=round(float(2 * r.max()), 1),
                            site=("deep grey" if where[0] != A.WM else "white matter")))
    # old cortical (territorial branch) infarct: a wedge from the convexity towards the ventricle
    if rng.random() < 0.15:
        X = ph.coords[0]
        c = _pick(rng, (ph.labels == A.GM) & (np.abs(X) > 35))
        if c is not None:
            depth = rng.uniform(18.0, 42.0)
            half = np.radians(rng.uniform(14.0, 32.0))
            centre_mm = np.array(_mm(ph, c))
            axis = np.array([0.0, 5.0, 10.0]) - centre_mm
            axis /= np.linalg.norm(axis)
            sl, d = _local(ph, c, depth + 10)
            apex = axis * depth
            v = d - apex
            along = -(v @ axis)
            perp = np.linalg.norm(v + along[..., None] * axis, axis=-1)
            edge = 1.0 + 0.15 * smooth_field(rng, along.shape, h, 4.0)
            m = (along > 0) & (along < depth + 10) & (perp < along * np.tan(half) * edge)
            val = t["csf"] + rng.uniform(2.0, 9.0)
            n = _paint(ph, sl, m, A.INFARCT, val, (A.WM, A.GM, A.CAUD, A.PUT))
            if n:
                out.append(dict(kind="old cortical infarct", centre_mm=_mm(ph, c), depth_mm=round(depth, 1),
                                volume_ml=round(n * h ** 3 / 1000, 2)))
    if rng.random() < 0.06:
        c = _pick(rng, ph.labels == A.CBL)
        if c is not None:
            r = rng.uniform(5.0, 12.0)
            sl, d = _local(ph, c, r + 2)
            m = (d * d).sum(-1) < r * r
            n = _paint(ph, sl, m, A.INFARCT, t["csf"] + rng.uniform(2.0, 8.0), (A.CBL,))
            if n:
                out.append(dict(kind="old cerebellar infarct", centre_mm=_mm(ph, c),
                                volume_ml=round(n * h ** 3 / 1000, 2)))
    # enlarged perivascular spaces: short thin CSF tubes (basal ganglia: vertical; centrum: radial)
    n_pvs = int(rng.integers(0, 8) + rng.poisson(25 * burden))
    count = 0
    Z = ph.coords[2]
    for _ in range(n_pvs):
        basal = rng.random() < 0.5
        c = _pick(rng, np.isin(ph.labels, (A.PUT, A.PALL)) if basal else (ph.labels == A.WM) & (Z > 25))
        if c is None:
            continue
        cm = np.array(_mm(ph, c))
        direc = np.array([0.0, 0.0, 1.0]) if basal else cm - np.array([0.0, 5.0, 10.0])
        direc = direc + rng.normal(0, 0.25, 3)
        direc /= np.linalg.norm(direc)
        length, rad = rng.uniform(3.0, 12.0), rng.uniform(0.5, 1.3)
        sl, d = _local(ph, c, length / 2 + rad + 1)
        s = np.clip(d @ direc, -length / 2, length / 2)
        m = np.linalg.norm(d - s[..., None] * direc, axis=-1) < max(rad, 0.5 * h)
        count += _paint(ph, sl, m, A.EPVS, t["csf"] + rng.uniform(0.0, 4.0), PARENCHYMA) > 0
    if count:
        out.append(dict(kind="enlarged perivascular spaces", count=int(count)))
    # calcifications
    g = ph.grid
    xs = g.axis(0)
    if rng.random() < 0.7:
        mid = (ph.labels == A.VENT) & (np.abs(xs)[None, None, :] < max(1.0, g.h))
        zlim = int((-12 - g.origin[2]) / g.h)
        mid[:max(zlim, 0)] = False
        idx = np.argwhere(mid)
        if idx.size:
            c = idx[np.argmax(idx[:, 1])].copy()
            c[1] += int(round(4.0 / g.h))
            r = rng.uniform(1.5, 4.0)
            sl, d = _local(ph, c, r + 1)
            m = (d * d).sum(-1) < r * r
            n = _paint(ph, sl, m, A.CALC, rng.uniform(150.0, 600.0), (A.WM, A.CSF, A.VENT, A.THAL, A.GM, A.BSTEM))
            if n:
                out.append(dict(kind="calcification", site="pineal", centre_mm=_mm(ph, c), diameter_mm=round(2 * r, 1)))
    if rng.random() < 0.55:
        for side in (-1, 1):
            m0 = (ph.labels == A.CHOROID) & ((xs * side) > 0)[None, None, :]
            idx = np.argwhere(m0)
            if not idx.size:
                continue
            c = np.round(idx.mean(axis=0)).astype(int)
            r = rng.uniform(1.5, 3.5)
            sl, d = _local(ph, c, r + 1)
            m = (d * d).sum(-1) < r * r
            if _paint(ph, sl, m, A.CALC, rng.uniform(100.0, 400.0), (A.CHOROID, A.VENT)):
                out.append(dict(kind="calcification", site="choroid plexus", centre_mm=_mm(ph, c)))
    if rng.random() < 0.12:
        for side in (-1, 1):
            idx = np.argwhere((ph.labels == A.PALL) & ((xs * side) > 0)[None, None, :])
            for k in range(int(rng.integers(2, 6)) if idx.size else 0):
                c = idx[rng.integers(len(idx))]
                sl, d = _local(ph, c, 2.5)
                m = (d * d).sum(-1) < rng.uniform(0.8, 1.6) ** 2
                _paint(ph, sl, m, A.CALC, rng.uniform(80.0, 250.0), (A.PALL, A.PUT))
        out.append(dict(kind="calcification", site="pallidum (bilateral)"))
    if rng.random() < 0.2:
        c = _pick(rng, (ph.labels == A.FALX) & (Z > 20))
        if c is not None:
            sl, d = _local(ph, c, 9)
            r = np.array([1.2, rng.uniform(4, 9), rng.uniform(2.5, 5)])
            m = ((d / r) ** 2).sum(-1) < 1
            if _paint(ph, sl, m, A.CALC, rng.uniform(150.0, 500.0), (A.FALX, A.CSF)):
                out.append(dict(kind="calcification", site="falx", centre_mm=_mm(ph, c)))
    return out
