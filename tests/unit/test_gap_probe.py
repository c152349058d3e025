"""training.gap_probe finds a head's white-matter and CSF levels from its image and stretches the gap between them."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from tests.unit import ct_heads  # noqa: E402
from training import gap_probe  # noqa: E402


def _head(wm=26.0, csf=11.0, noise=4.0, seed=0):
    """Five 200² slices at 0.5 mm: a skull ring, white matter, two ventricles and a thin sulcus of CSF."""
    sl, yy, xx = ct_heads.skull_slice(wm)
    sl[(np.abs(yy - 100) < 12) & (np.abs(xx - 80) < 8)] = csf
    sl[(np.abs(yy - 100) < 12) & (np.abs(xx - 120) < 8)] = csf
    sl[(np.abs(yy - 40) < 2) & (np.abs(xx - 100) < 20)] = csf
    return ct_heads.stack(sl, 5, noise, seed)


def test_tissue_levels_find_white_matter_and_csf_inside_the_skull():
    for wm, csf in ((26.0, 11.0), (30.0, 4.0)):
        lv = gap_probe.tissue_levels(_head(wm, csf), (0.5, 0.5))
        assert lv is not None
        assert abs(lv[0] - wm) < 1.0 and abs(lv[1] - csf) < 2.0


def test_no_skull_no_levels():
    a = np.full((3, 64, 64), 28.0, np.float32)
    assert gap_probe.tissue_levels(a, (1.0, 1.0)) is None


def test_stretch_widens_a_narrow_gap_monotonically_and_leaves_a_wide_one():
    a = np.array([-1000.0, 0.0, 11.0, 18.5, 26.0, 40.0, 1200.0], np.float32)
    out = gap_probe.stretch(a, wm=26.0, csf=11.0, gap=22.0)
    assert np.all(np.diff(out) > 0)
    assert out[4] == 26.0 and out[5] == 40.0 and out[6] == 1200.0  # white matter and above unchanged
    assert abs(out[2] - 4.0) < 1e-5 and abs(out[3] - 15.0) < 1e-5  # CSF at 26 - 22; halfway stays halfway
    assert abs(out[1] - (0.0 - 7.0)) < 1e-5  # below CSF: shifted by the same 7 HU
    assert gap_probe.stretch(a, wm=30.0, csf=4.0, gap=22.0) is a
