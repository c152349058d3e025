"""Train the WML model: a small 2-D U-Net on NCCT slices resampled in-plane to 1 mm.

Target = per-voxel lesion partial-volume fraction (the phantom's occupancy of
the thick CT voxel), so Σ fraction × voxel volume is the physical volume even
for lesions thinner than a slice. Loss = BCE on the soft target + soft Dice +
a per-crop volume term.

    .venv/bin/python -m training.train_wml --n-train 160 --minutes 20 \
        --out models_onnx/wml-ncct/1.0.0

Seeds are fixed (torch, numpy, data); the run is repeatable on the same
machine and thread count.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from svdmark.infer import preprocess as pp

from . import data
from .nets import UNet2D, export_onnx

SPACING_MM = 1.0
NORMALISATION = {"type": "hu_window", "center": 30.0, "scale": 20.0, "clip": [-2.0, 4.0]}
CROP = 96


def slices_of(case) -> tuple[np.ndarray, np.ndarray]:
    vol = case.volume
    grid = pp.PlaneGrid.make(vol.shape[1:], vol.pixel_spacing, SPACING_MM)
    img = pp.normalise(grid.to_model(vol.array), NORMALISATION)
    tgt = np.clip(grid.to_model(case.truth_fraction), 0, 1)
    return img.astype(np.float16), tgt.astype(np.float16)


def load_split(split: str, n: int, log=print, cached_only: bool = False):
    imgs, tgts = [], []
    t = time.time()
    todo = data.seeds(split, n)
    if cached_only:
        todo = [s for s in todo if data.is_cached("ncct", s)]
    for q, s in enumerate(todo):
        case = data.ncct_case(s)
        i, g = slices_of(case)
        # keep slices with brain (normalised > -1.2 ⇔ HU > 6) — skip empty caps of the stack
        keep = (i > -1.2).mean(axis=(1, 2)) > 0.05
        imgs.extend(i[keep])
        tgts.extend(g[keep])
        if q % 20 == 0:
            log(f"  {split}: {q + 1}/{n} cases, {len(imgs)} slices, {time.time() - t:.0f} s")
    return imgs, tgts


def sample_batch(imgs, tgts, lesion_slices, rng, bs):
    xs, ys = [], []
    for _ in range(bs):
        use_lesion = lesion_slices and rng.random() < 0.6
        n = int(rng.choice(lesion_slices)) if use_lesion else int(rng.integers(len(imgs)))
        im, tg = imgs[n], tgts[n]
        H, W = im.shape
        if use_lesion:
            ys_, xs_ = np.nonzero(tg > 0.2)
            if len(ys_):
                q = rng.integers(len(ys_))
                cy, cx = ys_[q] + rng.integers(-CROP // 3, CROP // 3), xs_[q] + rng.integers(-CROP // 3, CROP // 3)
            else:
                cy, cx = H // 2, W // 2
        else:
            cy, cx = rng.integers(H // 4, 3 * H // 4 + 1), rng.integers(W // 4, 3 * W // 4 + 1)
        y0 = int(np.clip(cy - CROP // 2, 0, max(H - CROP, 0)))
        x0 = int(np.clip(cx - CROP // 2, 0, max(W - CROP, 0)))
        a = np.full((CROP, CROP), -2.0, np.float32)
        b = np.zeros((CROP, CROP), np.float32)
        ca = im[y0 : y0 + CROP, x0 : x0 + CROP]
        a[: ca.shape[0], : ca.shape[1]] = ca
        b[: ca.shape[0], : ca.shape[1]] = tg[y0 : y0 + CROP, x0 : x0 + CROP]
        if rng.random() < 0.5:  # left-right flip (anatomy is near-symmetric)
            a, b = a[:, ::-1], b[:, ::-1]
        # mild intensity jitter: scanner calibration offsets of a few HU, contrast scale
        a = a * rng.uniform(0.95, 1.05) + rng.normal(0, 0.05)
        xs.append(a.copy())
        ys.append(b.copy())
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None])


def loss_fn(logits, y):
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    p = torch.sigmoid(logits)
    inter = (p * y).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)
    has = (y.sum((1, 2, 3)) > 1).float()
    vol = ((p.sum((1, 2, 3)) - y.sum((1, 2, 3))).abs() / (y.sum((1, 2, 3)) + 100)).clamp(max=1.0)
    return bce + 0.5 * (dice * has).sum() / (has.sum() + 1e-6) + 0.05 * vol.mean()


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    log = print
    imgs, tgts = load_split("train", args.n_train, log, args.cached_only)
    lesion_slices = [n for n, t in enumerate(tgts) if float(t.max()) > 0.3]
    log(f"train slices {len(imgs)}, with lesion {len(lesion_slices)}")
    net = UNet2D(args.channels)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    t0 = time.time()
    step = 0
    budget = args.minutes * 60
    total = args.steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30) * (1 - 0.7 * s / total))
    hist = []
    net.train()
    while step < total and time.time() - t0 < budget:
        x, y = sample_batch(imgs, tgts, lesion_slices, rng, args.batch)
        loss = loss_fn(net.logits(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        hist.append(loss.item())
        if step % 50 == 0:
            log(f"step {step}/{total} loss {np.mean(hist[-50:]):.4f} {time.time() - t0:.0f} s")
    net.eval()
    return {"net": net, "steps": step, "seconds": time.time() - t0, "final_loss": float(np.mean(hist[-50:]))}


def manifest(version: str, sha: str, meta: dict) -> dict:
    return {
        "name": "wml-ncct",
        "version": version,
        "task": "wml",
        "modality": "CT",
        "sha256": sha,
        "file": "model.onnx",
        "input": {
            "kind": "slice2d",
            "orientation": "source slice plane as acquired (axial, gantry tilt kept); no reorientation",
            "spacing_mm": [SPACING_MM, SPACING_MM],
            "through_plane": "native slices, any spacing 1-5 mm",
            "normalisation": NORMALISATION,
            "pad_value": -1000.0,
            "window": [256, 256],
            "overlap": 48,
            "multiple_of": 4,
            "batch": 4,
            "slab": 8,
            "tensor": {"name": "image", "shape": ["n", 1, "h", "w"], "dtype": "float32"},
        },
        "output": {
            "name": "fraction",
            "semantics": "per-voxel WML partial-volume fraction 0..1 on the model grid, resampled linearly to "
                         "the source grid; volume_ml = sum(fraction) * physical voxel volume / 1000",
            "mask_threshold": 0.5,
            "units": "1",
        },
        "self_test": {
            "generator": "make_ncct",
            "kwargs": meta["self_test_kwargs"],
            "expect": {"volume_ml": meta["self_test_range"]},
        },
        "training": meta.get("training", {}),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=160)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cached-only", action="store_true", help="use only cases already in training/cache")
    ap.add_argument("--out", type=Path, default=Path("models_onnx/wml-ncct/1.0.0"))
    args = ap.parse_args(argv)
    res = train(args)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = Path(__file__).resolve().parent / "runs"
    runs.mkdir(exist_ok=True)
    torch.save(res["net"].state_dict(), runs / f"wml-{args.out.name}.pt")
    example = torch.randn(2, 1, 96, 96)
    sha = export_onnx(res["net"], example, args.out / "model.onnx", "image", "fraction",
                      {"image": {0: "n", 2: "h", 3: "w"}, "fraction": {0: "n", 2: "h", 3: "w"}})
    meta = {
        "self_test_kwargs": SELF_TEST_KWARGS,
        "self_test_range": [0.0, 0.0],  # filled in by training.evaluate --self-test-bounds
        "training": {"command": "python -m training.train_wml "
                     + " ".join(argv if argv is not None else __import__("sys").argv[1:]), "steps": res["steps"],
                     "seconds": round(res["seconds"]), "final_loss": res["final_loss"], "seed": args.seed,
                     "n_train_cases": args.n_train, "torch": torch.__version__},
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest(args.out.name, sha, meta), indent=2) + "\n")
    print(f"wrote {args.out} sha256 {sha}")


SELF_TEST_KWARGS = {"seed": 0, "matrix": 256, "slice_thickness": 5.0, "tilt_deg": 0.0, "wml_ml": 10.0, "mimics": True}

if __name__ == "__main__":
    main()
