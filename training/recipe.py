"""The torch-free parts of a training recipe, importable (and tested) without the ``train`` extra: what a fine-tune
inherits from the packaged model it starts from, and how the training crops are shared among head sources."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


# Input settings chosen on validation data for a base model that stay valid for a fine-tune of it (the thin-slice
# slab: a property of the reader, not of the weights); carried over with the base's own record of the choice.
INHERITED_INPUT = ("min_slice_mm", "min_slice_choice")


def inherited_input(init_onnx: Path | None) -> dict:
    """``INHERITED_INPUT`` from the manifest beside ``--init-onnx`` (a packaged model), if there is one."""
    base = init_onnx.parent / "manifest.json" if init_onnx else None
    if base is None or not base.is_file():
        return {}
    man = json.loads(base.read_text())
    return {k: man["input"][k] for k in INHERITED_INPUT if k in man["input"]}


def source_shares(source: list[int], lesion_slices: list[int], shares: dict[int, float]):
    """Draw probabilities over the slice index and over its lesion slices that give each source (``source[q]``: the
    source of slice ``q``) its share of the crops of each kind; the shares of the sources present are renormalised
    (a kind with slices of one source only is drawn uniformly)."""
    def per_entry(src: np.ndarray) -> np.ndarray:
        present = {k: shares[k] for k in np.unique(src).tolist()}
        total = sum(present.values())
        if len(present) < 2 or total <= 0:
            return np.full(len(src), 1.0 / len(src))
        counts = {k: int((src == k).sum()) for k in present}
        return np.array([present[k] / total / counts[k] for k in src.tolist()])

    src = np.asarray(source, int)
    return per_entry(src), per_entry(src[np.asarray(lesion_slices, int)])
