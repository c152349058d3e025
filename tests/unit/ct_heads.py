"""Tiny CT heads drawn in tests of the training probes: a skull ring round white matter, the rest added by each test."""
from __future__ import annotations

import numpy as np

SIZE = 200  # pixels per side (0.5 mm in the tests: a 10 cm field)


def skull_slice(wm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slice, row index grid, column index grid): air, a 1200 HU skull ring of radius 80-90 px and white matter at
    ``wm`` HU inside it, for a test to draw its CSF and lesions on."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    r = np.hypot(yy - SIZE // 2, xx - SIZE // 2)
    sl = np.full((SIZE, SIZE), -1000.0, np.float32)
    sl[r < 90] = 1200.0
    sl[r < 80] = wm
    return sl, yy, xx


def stack(sl: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    """``n`` copies of ``sl`` with Gaussian noise of ``noise`` HU on the soft tissue (not on air or bone)."""
    rng = np.random.default_rng(seed)
    a = np.repeat(sl[None], n, 0)
    return a + (rng.normal(0, noise, a.shape) * (a > -500) * (a < 500)).astype(np.float32)
