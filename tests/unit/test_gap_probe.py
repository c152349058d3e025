"""training.gap_probe stretches a head's CSF-white-matter gap (its levels: svdmark.measure.head, tested with the
component filter)."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training import gap_probe  # noqa: E402


def test_stretch_widens_a_narrow_gap_monotonically_and_leaves_a_wide_one():
    a = np.array([-1000.0, 0.0, 11.0, 18.5, 26.0, 40.0, 1200.0], np.float32)
    out = gap_probe.stretch(a, wm=26.0, csf=11.0, gap=22.0)
    assert np.all(np.diff(out) > 0)
    assert out[4] == 26.0 and out[5] == 40.0 and out[6] == 1200.0  # white matter and above unchanged
    assert abs(out[2] - 4.0) < 1e-5 and abs(out[3] - 15.0) < 1e-5  # CSF at 26 - 22; halfway stays halfway
    assert abs(out[1] - (0.0 - 7.0)) < 1e-5  # below CSF: shifted by the same 7 HU
    assert gap_probe.stretch(a, wm=30.0, csf=4.0, gap=22.0) is a
