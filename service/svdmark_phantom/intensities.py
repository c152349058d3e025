"""Independent tissue intensities for NCCT heads (``make_ncct(..., independent=True)``), in SynthSeg's spirit.

``ct_values`` draws one plausible scanner: grey matter 6.5-11 HU above white matter, CSF 13-27 HU below it, lesions
3-10 HU below it, so CSF is always darker than lesion and a net can learn "a band of mild darkening, scaled by the
head's CSF" instead of where lesions lie. Here each brain tissue is drawn on its own from ranges wider than any one
scanner (Billot et al., Medical Image Analysis 2023, draw every label's intensity at random): white matter 18-36 HU,
grey matter 1-16 HU above it, CSF 4-36 HU below it, and the lesion contrast 2-24 HU with no tie to CSF, so in some
heads a lesion core is darker than the ventricles and only shape and place tell them apart. Lesions get an uneven
depth (``lesion_texture``): a smooth field scales the darkening by 0.3-1.8, so a load has dense cores and faint rims.
All draws come from a stream of their own: the head, lesions, mimics and noise stay those of the seed.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def independent_ct_values(base: dict, rng: np.random.Generator) -> dict:
    """``base`` (``ct_values``) with the brain tissues redrawn independently; returns a new dict."""
    wm = rng.uniform(18.0, 36.0)
    gm = wm + rng.uniform(1.0, 16.0)
    csf = wm - rng.uniform(4.0, 36.0)
    v = dict(base)
    v.update(wm=wm, gm=gm, csf=csf, cbl=gm - rng.uniform(0, 4), stem=wm + rng.uniform(-1, 5), dentate=gm,
             rednuc=wm + rng.uniform(0, 5), nigra=wm + rng.uniform(0, 5), dgm=gm - rng.uniform(0, 5),
             putamen=gm - rng.uniform(0, 5), gp=gm - rng.uniform(0, 7), thal=gm - rng.uniform(0, 7),
             chp=gm - rng.uniform(-2, 6), medullary=wm + rng.uniform(-1, 3), globe=csf + rng.uniform(0, 8))
    return v


def lesion_contrast(rng: np.random.Generator) -> float:
    """The lesions' full darkening below white matter (HU), independent of the CSF level."""
    return float(rng.uniform(2.0, 24.0))


def lesion_texture(rng: np.random.Generator, shape, pixel_mm: float) -> np.ndarray:
    """A smooth positive field (mean about 1, 0.3-1.8) that scales the lesion darkening voxel by voxel."""
    amp = rng.uniform(0.0, 0.6)
    sigma = rng.uniform(2.0, 6.0) / pixel_mm
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (0.7, sigma, sigma))
    n /= n.std() + 1e-6
    return np.clip(1.0 + amp * n, 0.3, 1.8).astype(np.float32)
