"""A few optimisation steps of each recipe on tiny synthetic data, then ONNX export that onnxruntime loads."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds training/

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from training import train_wml  # noqa: E402
from training.nets import CmbNet3D, UNet2D, export_onnx  # noqa: E402


def test_wml_unet_learns_and_exports(tmp_path):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    imgs, tgts = [], []
    for _ in range(2):  # two stacks of 3 slices (2.5-D: each slice sees its neighbours as channels)
        im = np.full((3, 64, 64), (28 - 30) / 20, np.float32) + rng.normal(0, 0.1, (3, 64, 64)).astype(np.float32)
        tg = np.zeros((3, 64, 64), np.float32)
        y, x = rng.integers(16, 48, 2)
        tg[:, y - 4 : y + 4, x - 4 : x + 4] = 1
        im[tg > 0] -= 0.4
        imgs.append(im.astype(np.float16))
        tgts.append(tg.astype(np.float16))
    index = [(v, k) for v in range(2) for k in range(3)]
    net = UNet2D(4, in_ch=3, levels=3)
    crop = 64
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        x, y, _ = train_wml.sample_batch(imgs, tgts, index, list(range(6)), rng, 4, ctx=1, crop=crop)
        assert tuple(x.shape) == (4, 3, crop, crop) and tuple(y.shape) == (4, 1, crop, crop)
        loss = train_wml.loss_fn(net.logits(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    sha = export_onnx(net.eval(), torch.randn(1, 3, 32, 32), tmp_path / "m.onnx", "image", "fraction",
                      {"image": {0: "n", 2: "h", 3: "w"}, "fraction": {0: "n", 2: "h", 3: "w"}})
    assert len(sha) == 64
    import onnx

    assert onnx.load(str(tmp_path / "m.onnx")).ir_version <= 13


def test_cmb_classifier_step_and_export(tmp_path):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = CmbNet3D(4, in_ch=2)
    x = torch.randn(6, 2, 20, 20, 20)
    y = torch.tensor([1.0, 0, 1, 0, 0, 1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(5):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net.raw(x)[:, 0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first
    export_onnx(net.eval(), torch.randn(2, 2, 20, 20, 20), tmp_path / "c.onnx", "patch", "output",
                {"patch": {0: "n"}, "output": {0: "n"}})
    import onnxruntime as ort

    out = ort.InferenceSession(str(tmp_path / "c.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"patch": np.zeros((3, 2, 20, 20, 20), np.float32)})[0]
    assert out.shape == (3, 2) and (out[:, 0] >= 0).all() and (out[:, 0] <= 1).all() and (out[:, 1] >= 1).all()


def test_faint_heads_left_out_lesion_free_kept():
    from types import SimpleNamespace as Case

    cases = [Case(seed=1, truth_ml=12.0, contrast_hu=3.2), Case(seed=2, truth_ml=0.0, contrast_hu=2.0),
             Case(seed=3, truth_ml=4.0, contrast_hu=5.0), Case(seed=4, truth_ml=0.5, contrast_hu=4.9)]
    left_out: list[int] = []
    kept = [c.seed for c in train_wml._without_faint(iter(cases), 5.0, left_out)]
    assert kept == [2, 3] and left_out == [1, 4]
    with pytest.raises(SystemExit, match="seed 5"):
        train_wml.is_faint(Case(seed=5, truth_ml=1.0, contrast_hu=None), 5.0)


def test_the_default_loss_weighs_an_empty_crops_over_read_above_a_full_crops_under_read():
    full = torch.zeros(1, 1, 32, 32)
    full[..., :20, :] = 1.0  # 640 lesion px
    empty = torch.zeros(1, 1, 32, 32)

    def logits(p):
        return torch.logit(p.clamp(1e-4, 1 - 1e-4))

    over = empty.clone()
    over[..., :4, :] = 1.0  # 128 false px on an empty crop
    under = full.clone()
    under[..., :4, :] = 0.0  # 128 px missed on a full crop
    volume_and_dice = {name: float(train_wml.loss_fn(logits(p), y) - train_wml.loss_fn(logits(p), y, "bce"))
                       for name, p, y in (("over", over, empty), ("under", under, full))}
    assert volume_and_dice["over"] > volume_and_dice["under"] > 0
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits(over), empty)
    assert float(train_wml.loss_fn(logits(over), empty, "bce")) == pytest.approx(float(bce))
