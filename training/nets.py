"""Small networks for the reference models, and ONNX export that onnxruntime 1.31 loads."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # onnxruntime 1.31 loads IR <= 13; torch/onnx 1.23 would write a newer one


def _block(cin: int, cout: int, conv=nn.Conv2d, norm=nn.BatchNorm2d) -> nn.Sequential:
    return nn.Sequential(
        conv(cin, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True),
        conv(cout, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True),
    )


def wm_gate(wm: torch.Tensor) -> torch.Tensor:
    """How much lesion a voxel of predicted white-matter fraction ``wm`` may keep: none below 0.1, all from 0.4.

    The generator labels lesion only where white matter is at least a quarter of the voxel
    (``svdmark_phantom.lesions.wm_label_weight``), so the gate is open wherever a label can be substantial and shut
    where the voxel is clearly not white matter (ventricle, sulcus, grey matter).
    """
    return ((wm - 0.1) / 0.3).clamp(0.0, 1.0)


class UNet2D(nn.Module):
    """``levels``-level 2-D U-Net, input (n,in_ch,h,w) with h, w multiples of 2**levels; output lesion
    fraction (sigmoid). Channels double per level from ``c``.

    ``wm_head``: a second 1x1 head on the same features predicts the white-matter fraction (trained on the
    generator's map); with ``gate`` on, the output is the lesion fraction times ``wm_gate`` of that prediction, so a
    dark region the net does not take for white matter (a ventricle) carries no lesion. The exported graph has one
    input and one output either way.

    Receptive field: 44 px at 2 levels, 92 px at 3 (``receptive_field``); a tile overlap of at
    least that makes tiled inference equal to whole-image inference. The 2-level parameter names are
    those of wml-ncct 1.0/1.1 (``e1 e2 b d2 d1``), so their state dicts still load.
    """

    def __init__(self, c: int = 16, in_ch: int = 1, levels: int = 2, wm_head: bool = False):
        super().__init__()
        if levels < 1:
            raise ValueError("levels must be >= 1")
        self.levels = levels
        widths = [c * 2 ** i for i in range(levels + 1)]  # encoder widths, bottleneck last
        for i in range(levels):
            self.add_module(f"e{i + 1}", _block(in_ch if i == 0 else widths[i - 1], widths[i]))
        self.b = _block(widths[levels - 1], widths[levels])
        for i in reversed(range(levels)):
            self.add_module(f"d{i + 1}", _block(widths[i + 1] + widths[i], widths[i]))
        self.head = nn.Conv2d(c, 1, 1)
        self.head_wm = nn.Conv2d(c, 1, 1) if wm_head else None
        self.gate = wm_head
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    @property
    def receptive_field(self) -> int:
        # 1 px, + two 3x3 convs per level on the way down and up (8·2**i), + the bottleneck's two (4·2**L),
        # + 3 px of pooling/upsampling alignment (measured with a gradient probe: 44 px at L=2, 92 at L=3)
        L = self.levels
        return 1 + sum(8 * 2 ** i for i in range(L)) + 4 * 2 ** L + 3

    def features(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i in range(self.levels):
            x = getattr(self, f"e{i + 1}")(x if i == 0 else self.pool(x))
            skips.append(x)
        x = self.b(self.pool(x))
        for i in reversed(range(self.levels)):
            x = getattr(self, f"d{i + 1}")(torch.cat([self.up(x), skips[i]], 1))
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lesion logits and white-matter logits from one pass (``wm_head`` nets only)."""
        f = self.features(x)
        return self.head(f), self.head_wm(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_wm is None or not self.gate:
            return torch.sigmoid(self.logits(x))
        lesion, wm = self.heads(x)
        return torch.sigmoid(lesion) * wm_gate(torch.sigmoid(wm))


class CmbNet3D(nn.Module):
    """Candidate classifier on isotropic patches (n,in_ch,s,s,s) → (n,2): [P(microbleed), diameter mm].

    Channels: the same centre at 1 mm and at 2 mm sampling (local shape + vessel context).
    """

    def __init__(self, c: int = 12, in_ch: int = 2):
        super().__init__()
        b3 = lambda i, o: _block(i, o, nn.Conv3d, nn.BatchNorm3d)  # noqa: E731
        self.f = nn.Sequential(b3(in_ch, c), nn.MaxPool3d(2), b3(c, 2 * c), nn.MaxPool3d(2), b3(2 * c, 4 * c))
        self.fc = nn.Sequential(nn.Linear(8 * c, 32), nn.ReLU(inplace=True), nn.Linear(32, 2))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        h = self.f(x)
        g = torch.cat([h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))], 1)
        return self.fc(g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.raw(x)
        prob = torch.sigmoid(r[:, :1])
        diam = nn.functional.softplus(r[:, 1:2]) + 1.0
        return torch.cat([prob, diam], 1)


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str,
                dynamic: dict) -> str:
    """Export, downgrade the IR version so onnxruntime 1.31 loads it, verify it loads; return sha256."""
    import onnx
    import onnxruntime as ort

    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(
        model, (example,), str(tmp), input_names=[input_name], output_names=[output_name],
        dynamic_axes=dynamic, opset_version=ONNX_OPSET, dynamo=False,
    )
    m = onnx.load(str(tmp))
    m.ir_version = ONNX_IR_VERSION
    m.producer_name = "svdmark-training"
    m.doc_string = ""
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    tmp.unlink()
    for extra in path.parent.glob(path.name + ".data"):
        extra.unlink()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model(example).numpy()
    got = sess.run(None, {input_name: example.numpy()})[0]
    err = float(abs(ref - got).max())
    if err > 1e-3:
        raise RuntimeError(f"ONNX export mismatch {err}")
    return hashlib.sha256(path.read_bytes()).hexdigest()
