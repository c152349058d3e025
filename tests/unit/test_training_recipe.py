"""training.recipe (no torch needed): a fine-tune inherits its base's thin-slice setting, and the atlas heads get
the share of the crops asked for."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

from training.recipe import inherited_input, source_shares  # noqa: E402


def test_a_fine_tune_inherits_the_thin_slice_setting_of_its_base(tmp_path):
    base = tmp_path / "wml-ncct" / "1.0.0"
    base.mkdir(parents=True)
    (base / "model.onnx").write_bytes(b"")
    assert inherited_input(base / "model.onnx") == {}  # no manifest beside it: nothing to inherit
    (base / "manifest.json").write_text(json.dumps({"input": {"min_slice_mm": 2.5, "min_slice_choice": "val_thin",
                                                              "window": [352, 352]}}))
    assert inherited_input(base / "model.onnx") == {"min_slice_mm": 2.5, "min_slice_choice": "val_thin"}
    assert inherited_input(None) == {}


def test_source_shares_give_the_atlas_heads_their_share_of_the_crops():
    is_atlas = [0, 0, 0, 1, 1, 0]
    atlas = {0: 0.75, 1: 0.25}  # analytic, atlas
    w, w_lesion = source_shares(is_atlas, [0, 3, 4], atlas)
    assert np.isclose(w.sum(), 1) and np.isclose(w_lesion.sum(), 1)
    assert np.isclose(w[[3, 4]].sum(), 0.25) and np.allclose(w[[0, 1, 2, 5]], 0.75 / 4)
    assert np.allclose(w_lesion, [0.75, 0.125, 0.125])  # one analytic lesion slice, two atlas ones
    w, w_lesion = source_shares([0, 0], [1], {0: 0.1, 1: 0.9})  # one source only: uniform
    assert np.allclose(w, 0.5) and np.allclose(w_lesion, 1.0)
    draws = np.random.default_rng(0).choice(len(is_atlas), 20000, p=source_shares(is_atlas, [0], atlas)[0])
    assert abs(np.isin(draws, [3, 4]).mean() - 0.25) < 0.01  # what sample_batch draws with them


def test_source_shares_give_three_sources_their_shares_of_the_crops():
    source = [0, 0, 0, 0, 1, 1, 2]
    w, w_lesion = source_shares(source, [0, 4, 6], {0: 0.5, 1: 0.25, 2: 0.25})
    assert w.sum() == pytest.approx(1.0) and w_lesion.sum() == pytest.approx(1.0)
    by = {k: sum(p for p, s in zip(w, source) if s == k) for k in (0, 1, 2)}
    assert by == pytest.approx({0: 0.5, 1: 0.25, 2: 0.25})
    assert list(w_lesion) == pytest.approx([0.5, 0.25, 0.25])
    w, _ = source_shares([0, 0, 1], [0], {0: 0.5, 1: 0.0, 2: 0.5})  # a source absent: the others renormalised
    assert list(w) == pytest.approx([0.5, 0.5, 0.0])
