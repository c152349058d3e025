"""Continue training from a shipped ONNX model when its PyTorch state dict is gone.

The exported graphs have every BatchNorm folded into the convolution before it (torch's ONNX export
does that in eval mode), so the initialisers are conv weights + biases in module order. ``load_onnx``
writes them back into a freshly built net of the same architecture: the conv gets the folded weight,
the BatchNorm after it becomes the identity carrying the folded bias (running mean 0, variance
1 − eps, weight 1). ``freeze_norm_stats`` keeps those BatchNorms in eval mode while the rest trains,
so the network starts exactly where the shipped model was (checked: max difference on a random input)
and the affine parameters still learn.

Own code because no library reverses BatchNorm folding; it is only used by the training recipes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)


def _float_initialisers(path: Path) -> list[tuple[str, np.ndarray]]:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    return [(i.name, numpy_helper.to_array(i)) for i in m.graph.initializer
            if numpy_helper.to_array(i).dtype == np.float32 and numpy_helper.to_array(i).ndim >= 1]


def load_onnx(net: nn.Module, path: Path, example: torch.Tensor, skip: tuple[str, ...] = ()) -> float:
    """Load the folded weights of ``path`` into ``net``; returns the max |torch − onnxruntime| on ``example``.

    ``skip``: modules the file does not have (a head added to the shipped architecture); they keep their
    initialisation, and the comparison is the caller's to make on a path that does not use them.
    """
    import onnxruntime as ort

    inits = _float_initialisers(path)
    by_name = dict(inits)
    # named parameters the export kept (e.g. head.weight, fc.0.weight) are matched by name, the rest in order
    folded = [a for n, a in inits if n.startswith("onnx::")]
    mods = list(net.modules())
    fi = 0
    with torch.no_grad():
        for q, mod in enumerate(mods):
            if not isinstance(mod, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                continue
            name = next(n for n, m in net.named_modules() if m is mod)
            if name in skip:
                continue
            if f"{name}.weight" in by_name:
                w = by_name[f"{name}.weight"]
                if isinstance(mod, nn.Linear) and w.shape != tuple(mod.weight.shape):
                    w = w.T
                mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
                if mod.bias is not None:
                    mod.bias.copy_(torch.from_numpy(by_name[f"{name}.bias"]))
                continue
            w, b = folded[fi], folded[fi + 1]
            fi += 2
            if isinstance(mod, nn.Linear) and w.shape != tuple(mod.weight.shape):
                w = w.T
            if w.shape != tuple(mod.weight.shape):
                raise ValueError(f"{path}: folded weight {w.shape} does not fit {name} {tuple(mod.weight.shape)}")
            mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            norm = mods[q + 1] if q + 1 < len(mods) and isinstance(mods[q + 1], _NORMS) else None
            if norm is not None:
                norm.weight.fill_(1.0)
                norm.bias.copy_(torch.from_numpy(b))
                norm.running_mean.zero_()
                norm.running_var.fill_(1.0 - norm.eps)
            elif mod.bias is not None:
                mod.bias.copy_(torch.from_numpy(b))
            else:
                raise ValueError(f"{path}: no place for the folded bias of {name}")
    if fi != len(folded):
        raise ValueError(f"{path}: {len(folded) - fi} folded initialisers left over")
    net.eval()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = net(example).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: example.numpy()})[0]
    return float(np.abs(ref - got).max())


def freeze_norm_stats(net: nn.Module) -> None:
    """Keep every BatchNorm's running statistics fixed (eval mode); call after ``net.train()``."""
    for m in net.modules():
        if isinstance(m, _NORMS):
            m.eval()
