"""training.level_probe moves tissue, not air, and refuses the reported splits."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from tests.unit.test_measure import tilted_volume  # noqa: E402
from training import level_probe  # noqa: E402


def test_offset_moves_tissue_and_bone_and_leaves_air():
    a = np.array([[[-1000.0, -500.0, 0.0, 30.0, 1200.0]]], np.float32)
    vol = tilted_volume(a.shape, array=a)
    out = level_probe.offset_volume(vol, -4.0).array
    assert out.tolist() == [[[-1000.0, -500.0, -4.0, 26.0, 1196.0]]]
    assert vol.array[0, 0, 3] == 30.0  # the case itself is untouched


def test_reported_splits_are_refused():
    with pytest.raises(SystemExit, match="validation splits only"):
        level_probe.probe("val,heldout", 1, [0.0], 1.0, runtime=None, registry=None)
