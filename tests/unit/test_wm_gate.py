"""The white-matter gate of the WML net (training.nets.UNet2D(wm_head=True)) and its training targets."""
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training import train_wml  # noqa: E402
from training.nets import UNet2D, export_onnx, wm_gate  # noqa: E402
from training.warmstart import load_onnx  # noqa: E402


def test_gate_shuts_below_a_tenth_and_opens_from_four_tenths():
    g = wm_gate(torch.tensor([0.0, 0.1, 0.25, 0.4, 1.0]))
    assert torch.allclose(g, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_gated_output_is_lesion_times_gate_and_ungated_is_the_plain_net():
    torch.manual_seed(0)
    net = UNet2D(4, in_ch=3, levels=2, wm_head=True).eval()
    with torch.no_grad():
        net.head_wm.bias.fill_(-2.0)  # a predicted white-matter fraction near 0.1: the gate mostly shut
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        lesion, wm = net.heads(x)
        gated = net(x)
        net.gate = False
        plain = net(x)
    assert torch.allclose(gated, torch.sigmoid(lesion) * wm_gate(torch.sigmoid(wm)))
    assert torch.allclose(plain, torch.sigmoid(lesion))
    assert not torch.allclose(gated, plain)


def test_the_shipped_model_warm_starts_a_gated_net(tmp_path):
    """wml-ncct 1.12.0's weights load into the gated net's lesion path; its exported graph keeps one output."""
    shipped = Path(__file__).resolve().parents[2] / "service/svdmark/data/models/wml-ncct/1.12.0/model.onnx"
    torch.manual_seed(1)
    example = torch.randn(2, 3, 96, 96)
    net = UNet2D(16, in_ch=3, levels=3, wm_head=True)
    net.gate = False
    assert load_onnx(net, shipped, example, skip=("head_wm",)) < 1e-3
    net.gate = True
    export_onnx(net, example, tmp_path / "new.onnx", "image", "fraction", {"image": {0: "n"}, "fraction": {0: "n"}})
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "new.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["fraction"]


def test_batches_carry_the_white_matter_map_through_the_flips():
    """The map target follows every flip of its crop; a stack without a map is marked unknown (-1)."""
    yy, xx = np.mgrid[0:64, 0:64]
    wm = np.stack([(xx / 63.0) * (0.5 + 0.1 * k) for k in range(5)]).astype(np.float16)  # asymmetric, per slice
    img = (wm.astype(np.float32) * 2 - 1).astype(np.float16)
    tgt = np.zeros_like(img)
    index = [(0, 2), (1, 2)]
    b = train_wml.sample_batch([img, img], [tgt, tgt], index, [], np.random.default_rng(0), 16, crop=64,
                               wms=[wm, None], wm_target=True)
    assert b.wm.shape == b.y.shape == (16, 1, 64, 64)
    known = b.wm[:, 0, 0, 0] >= 0
    assert 0 < int(known.sum()) < 16 and bool((b.wm[~known] == -1).all())
    for x, m in zip(b.x[known], b.wm[known]):
        assert np.corrcoef(x[1].numpy().ravel(), m[0].numpy().ravel())[0, 1] > 0.99  # same slice, same flip
    assert train_wml.sample_batch([img], [tgt], index[:1], [], np.random.default_rng(0), 2, crop=64).wm is None


def test_white_matter_loss_ignores_unknown_voxels():
    logits = torch.zeros(1, 1, 2, 2)
    known = train_wml.wm_loss(logits, torch.tensor([[[[1.0, 1.0], [-1.0, -1.0]]]]))
    assert torch.isclose(known, torch.tensor(np.log(2.0), dtype=torch.float32))
