"""Random elastic deformation of template space.

Every anatomical source (the MNI152 maps, the procedural brain, the skull-base primitives) is evaluated at
``source = x + u(x)``, where u is a smooth random displacement: a large-scale component (3-8 mm over 40-60 mm,
head shape and hemispheric asymmetry) plus a mid-scale one (0.5-2.5 mm over 12-20 mm, local gyral and ventricular
shape). The field is shrunk until its Jacobian stays clearly positive so the warp never folds.
"""
from __future__ import annotations

import numpy as np

from .fields import Grid, interp_axis, smooth_noise


def source_coords(rng: np.random.Generator, grid: Grid):
    """(X, Y, Z, umax, info): template coordinates where each canonical voxel samples the anatomy."""
    s = max(4.0, grid.h)
    cshape = tuple(int(np.ceil((b - a) / s)) + 2 for a, b in zip(grid.lo, grid.hi))
    a_large = float(rng.uniform(3.0, 8.0))
    l_large = float(rng.uniform(40.0, 60.0))
    a_mid = float(rng.uniform(0.5, 2.5))
    l_mid = float(rng.uniform(12.0, 20.0))
    u = np.stack([a_large * smooth_noise(rng, cshape, s, l_large) + a_mid * smooth_noise(rng, cshape, s, l_mid)
                  for _ in range(3)])
    scale = 1.0
    for _ in range(8):  # keep det(I + grad u) > 0.4 everywhere
        J = np.empty((3, 3) + cshape, np.float32)
        for a in range(3):
            g = np.gradient(u[a] * scale, s)
            for b in range(3):
                J[a, b] = g[b] + (1.0 if a == b else 0.0)
        det = np.linalg.det(np.moveaxis(J, (0, 1), (-2, -1)))
        if float(det.min()) > 0.4:
            break
        scale *= 0.8
    u *= scale
    umax = float(np.abs(u).max())
    out = []
    for a in range(3):
        f = u[a]
        for ax in range(3):
            f = interp_axis(f, np.arange(grid.shape[ax]) * grid.h / s, ax)
        f += grid.axis(a).reshape([-1 if i == a else 1 for i in range(3)])
        out.append(f)
    info = {"elastic_large_mm": round(a_large * scale, 2), "elastic_large_scale_mm": round(l_large, 1),
            "elastic_mid_mm": round(a_mid * scale, 2), "elastic_mid_scale_mm": round(l_mid, 1),
            "elastic_max_mm": round(umax, 2)}
    return out[0], out[1], out[2], umax, info
