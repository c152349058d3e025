"""Boolean masks of a series, shared by routing, inference and measurement (numpy and scipy only, so that routing
need not import the inference runtime).

Hand-written: scipy labels the objects, but "keep the largest" is one line of numpy whose fast form is not obvious
(see :func:`largest_object`), and no maintained library offers it for n-d masks."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def largest_object(mask: np.ndarray) -> np.ndarray | None:
    """The largest connected object of a boolean mask (face connectivity; the first of equals), or None if empty.
    Sizes by ``np.bincount`` of the mask's labels only: ``ndimage.sum`` over every label took about a second on a
    512x512x102 series, and ``np.bincount`` over the whole label array 0.6 s on a 512x512x119 one (it converts every
    voxel's label to int64), against 0.06 s for the labels under the mask."""
    mask = np.asarray(mask, bool)
    lab, n = ndi.label(mask)
    if n == 0:
        return None
    sizes = np.bincount(lab[mask], minlength=n + 1)
    sizes[0] = 0
    return lab == int(np.argmax(sizes))
