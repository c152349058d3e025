"""Train the WML model: a small 2-D U-Net on NCCT slices resampled in-plane to 1 mm.

Input: 2.5-D — the slice and its ``--context`` neighbours on each side as
channels. Target = per-voxel lesion partial-volume fraction (the phantom's
``aux["wml_fraction"]``, its occupancy of the thick CT voxel), so Σ fraction × voxel volume is the physical volume even
for lesions thinner than a slice. Loss = BCE on the soft target + soft Dice +
a per-crop volume term.

    PYTHONPATH=. .venv/bin/python -m training.train_wml --n-train 100 --steps 3000 --minutes 25 \
        --out service/svdmark/data/models/wml-ncct/1.1.0

Seeds are fixed (torch, numpy, data); the run is repeatable on the same
machine and thread count, with ``--workers 0`` (the default). ``--device cuda --workers N`` trains on a lent GPU with
the crops drawn in N worker processes (``training.crop_stream``): the same recipe, not the same sequence of draws.
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from svdmark.infer import preprocess as pp

from . import crop_stream, data, devcases
from .data import RUNS
from .augment import lesion_contrast_floor, randomise_ct
from .lesion_insertion import DIAMETER_MM, insert_lesions
from .lesion_patterns import STYLES, insert_patterns
from .nets import UNet2D, export_onnx
from .recipe import inherited_input, source_shares
from .warmstart import freeze_norm_stats, load_onnx

SPACING_MM = 1.0
NORMALISATION = {"type": "hu_window", "center": 30.0, "scale": 20.0, "clip": [-2.0, 4.0]}


@dataclass
class Stacks:
    """The training stacks on the model grid, and the (stack, slice) index of every slice with brain in it."""

    imgs: list = field(default_factory=list)  # (nz, h, w) float16 normalised images
    tgts: list = field(default_factory=list)  # (nz, h, w) float16 lesion fractions
    index: list = field(default_factory=list)  # (stack, slice) pairs
    contrasts: list = field(default_factory=list)  # the generator's lesion contrast (HU) or None
    wms: list = field(default_factory=list)  # (nz, h, w) float16 white-matter fractions, or None
    spacings: list = field(default_factory=list)  # mm between slices

    def extend(self, more: "Stacks") -> None:
        """Append another source's stacks, their index moved past the stacks already here."""
        self.index += [(v + len(self.imgs), k) for v, k in more.index]
        for name in ("imgs", "tgts", "contrasts", "wms", "spacings"):
            getattr(self, name).extend(getattr(more, name))


def slices_of(case) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The whole stack of a case on the model grid: image, target fraction and white-matter fraction (None
    where the case has no map), each (nz, h, w) float16."""
    vol = case.volume
    grid = pp.PlaneGrid.make(vol.shape[1:], vol.pixel_spacing, SPACING_MM)
    img = pp.normalise(grid.to_model(vol.array), NORMALISATION)
    tgt = np.clip(grid.to_model(case.truth_fraction), 0, 1)
    wm = None if case.wm_fraction is None else np.clip(grid.to_model(case.wm_fraction), 0, 1).astype(np.float16)
    return img.astype(np.float16), tgt.astype(np.float16), wm


def load_split(split: str, n: int, log=print, cached_only: bool = False, with_wm: bool = False,
               min_head_contrast: float | None = None) -> Stacks:
    """The stacks of a split (``with_wm``: with the white-matter maps, generating any case cached without;
    ``min_head_contrast``: without the heads whose lesion was drawn fainter than that many HU)."""
    todo = data.seeds(split, n)
    if cached_only:
        todo = [s for s in todo if data.is_cached("ncct", s)]
    cases = (data.ncct_case(s, with_wm=with_wm) for s in todo)
    faint: list[int] = []
    if min_head_contrast is not None:
        cases = _without_faint(cases, min_head_contrast, faint)
    st = load_cases(cases, len(todo), split, log)
    if faint:
        log(f"  {split}: {len(faint)} of {len(todo)} heads left out, their lesion fainter than "
            f"{min_head_contrast:g} HU", flush=True)
    if any(c is None for c in st.contrasts):  # cached before contrast_hu: no sub-threshold darkening for those
        log(f"  {split}: {sum(c is None for c in st.contrasts)} of {len(st.contrasts)} cases lack the lesion "
            "contrast (cached before it was stored); delete training/cache/ to regenerate them", flush=True)
    return st


def is_faint(case, min_contrast: float) -> bool:
    """A head with lesion drawn fainter than ``min_contrast`` HU: a label its pixels barely show. Refuses a lesion
    head without a recorded contrast (cached before it was stored)."""
    if case.truth_ml <= 0:
        return False
    if case.contrast_hu is None:
        raise SystemExit(f"seed {case.seed}: no lesion contrast in the cache; delete training/cache/ to regenerate it")
    return case.contrast_hu < min_contrast


def _without_faint(cases, min_contrast: float, left_out: list[int]):
    """``cases`` less the faint heads (:func:`is_faint`), whose seeds go to ``left_out``."""
    for c in cases:
        if is_faint(c, min_contrast):
            left_out.append(c.seed)
        else:
            yield c


def load_cases(cases, n: int, split: str, log=print) -> Stacks:
    """``load_split`` of any ``n`` NcctCases (``split`` names them in the log; another generator's heads carry no
    lesion contrast, so they get no sub-threshold darkening)."""
    st = Stacks()
    t = time.time()
    for q, case in enumerate(cases):
        i, g, wm = slices_of(case)
        # keep slices with brain (normalised > -1.2 ⇔ HU > 6) — skip empty caps of the stack
        keep = np.nonzero((i > -1.2).mean(axis=(1, 2)) > 0.05)[0]
        st.imgs.append(i)
        st.tgts.append(g)
        st.wms.append(wm)
        st.spacings.append(float(case.volume.slice_spacing))
        st.contrasts.append(case.contrast_hu)
        st.index.extend((len(st.imgs) - 1, int(k)) for k in keep)
        if q % 20 == 0:
            log(f"  {split}: {q + 1}/{n} cases, {len(st.index)} slices, {time.time() - t:.0f} s", flush=True)
    return st


def _crop(stack: np.ndarray, k: int, ctx: int, y0: int, x0: int, crop: int, fill: float) -> np.ndarray:
    """Slice ``k`` and its ``ctx`` neighbours each side, cropped at (``y0``, ``x0``) to crop², padded with ``fill``."""
    out = np.full((2 * ctx + 1, crop, crop), fill, np.float32)
    c = _stack_slices(stack, k, ctx)[:, y0 : y0 + crop, x0 : x0 + crop]
    out[:, : c.shape[1], : c.shape[2]] = c
    return out


def _stack_slices(stack: np.ndarray, k: int, ctx: int) -> np.ndarray:
    idx = np.clip(np.arange(k - ctx, k + ctx + 1), 0, stack.shape[0] - 1)
    return stack[idx]


class Batch(NamedTuple):
    """Training crops (n, 2*ctx+1, h, w), their lesion-fraction targets (n, 1, h, w) and, where asked for, their
    white-matter fraction targets (n, 1, h, w; -1 where unknown)."""

    x: torch.Tensor
    y: torch.Tensor
    wm: torch.Tensor | None = None


def sample_batch(imgs, tgts, index, lesion_slices, rng, bs, ctx: int = 1, lesion_p: float = 0.5, crop: int = 96,
                 randomise: float = 0.0, contrasts=None, wide_point_spread: bool = False,
                 min_contrast_hu: float | None = None, weights=None, insert: float = 0.0, wms=None, spacings=None,
                 insert_own_contrast: bool = False, insert_max_mm: float = DIAMETER_MM[1],
                 wm_target: bool = False, low_contrast: float = 0.0, low_contrast_negatives: bool = False,
                 dense_lesions: float = 0.0, patterns: float = 0.0,
                 pattern_style: str = "loose", csf_rim: bool = True) -> Batch:
    """``bs`` crops (crop²) with 2*ctx+1 channels (the slice and its neighbours) and the slice's target.

    ``index``: (stack, slice) pairs to draw from; ``lesion_slices``: positions in ``index`` whose target has
    lesion (a fraction ``lesion_p`` of the crops is centred near lesion, the rest anywhere in the central
    head, which is where the mimics and the negatives are). ``randomise`` > 0: that fraction of the crops is
    re-rendered with a random scanner (``training.augment.randomise_ct``), scaled by the stack's lesion
    contrast from ``contrasts`` where given. ``min_contrast_hu``: every crop's lesion is at least that much
    darker than its white matter (``training.augment.lesion_contrast_floor``; None: as the generator drew it).
    ``weights``: (over ``index``, over ``lesion_slices``) draw probabilities (``training.recipe.source_shares``);
    None: uniform. ``insert`` > 0: that fraction of the crops of stacks with a white-matter map (``wms``, slice
    spacing ``spacings``) gets lesions pasted into its white matter (``training.lesion_insertion``), at most
    ``insert_max_mm`` across and, with ``insert_own_contrast``, at the stack's own lesion contrast.
    ``wm_target``: the batch carries each crop's centre white-matter fraction too (-1 where the stack has no map).
    ``low_contrast``: passed to ``randomise_ct`` (CSF and grey matter moved towards white matter, labels kept);
    with ``low_contrast_negatives`` only to crops without labelled lesion (fraction < 0.02 in every channel).
    ``dense_lesions``: passed to ``randomise_ct`` (a share of the lesion contrast changes 3-8 HU darker).
    ``csf_rim``: passed to ``randomise_ct`` (False: its unlabelled CSF-boundary darkening is not added).
    ``patterns`` > 0: that fraction of the crops with a white-matter map gets scattered foci and periventricular
    halos (``training.lesion_patterns``, drawn in ``pattern_style``; at the stack's own contrast with
    ``insert_own_contrast``).
    """
    xs, ys, ws = [], [], []
    for _ in range(bs):
        use_lesion = len(lesion_slices) > 0 and rng.random() < lesion_p
        if weights is None:
            q = int(rng.choice(lesion_slices)) if use_lesion else int(rng.integers(len(index)))
        else:
            q = int(rng.choice(lesion_slices, p=weights[1]) if use_lesion else rng.choice(len(index), p=weights[0]))
        v, k = index[q]
        tg = tgts[v][k]
        H, W = tg.shape
        if use_lesion:
            ys_, xs_ = np.nonzero(tg > 0.2)
            if len(ys_):
                r = rng.integers(len(ys_))
                cy, cx = ys_[r] + rng.integers(-crop // 3, crop // 3), xs_[r] + rng.integers(-crop // 3, crop // 3)
            else:
                cy, cx = H // 2, W // 2
        else:
            cy, cx = rng.integers(H // 5, 4 * H // 5 + 1), rng.integers(W // 5, 4 * W // 5 + 1)
        y0 = int(np.clip(cy - crop // 2, 0, max(H - crop, 0)))
        x0 = int(np.clip(cx - crop // 2, 0, max(W - crop, 0)))
        a = _crop(imgs[v], k, ctx, y0, x0, crop, -2.0)
        les = _crop(tgts[v], k, ctx, y0, x0, crop, 0.0)  # each channel's lesion fraction; the centre one is the target
        has_map = wms is not None and wms[v] is not None
        wm = _crop(wms[v], k, ctx, y0, x0, crop, 0.0) if (insert or patterns or wm_target or low_contrast) and has_map \
            else None
        if rng.random() < 0.5:  # left-right flip (anatomy is near-symmetric)
            a, les = a[:, :, ::-1], les[:, :, ::-1]
            wm = None if wm is None else wm[:, :, ::-1]
        if ctx and rng.random() < 0.5:  # head-foot flip of the neighbours (stacks run both ways)
            a, les = a[::-1], les[::-1]
            wm = None if wm is None else wm[::-1]
        contrast = contrasts[v] if contrasts is not None else None
        a, contrast = lesion_contrast_floor(a, les, contrast, min_contrast_hu)
        if wm is not None and rng.random() < insert:
            a, les = insert_lesions(np.ascontiguousarray(a), np.ascontiguousarray(les), wm, spacings[v], rng,
                                    own_contrast_hu=contrast if insert_own_contrast else None,
                                    max_diameter_mm=insert_max_mm)
        if patterns and wm is not None and rng.random() < patterns:  # no draw at 0: old recipes replay
            a, les = insert_patterns(np.ascontiguousarray(a), np.ascontiguousarray(les), wm, spacings[v], rng,
                                     own_contrast_hu=contrast if insert_own_contrast else None, style=pattern_style)
        b = les[ctx]
        if randomise and rng.random() < randomise:
            a = randomise_ct(np.ascontiguousarray(a), rng, lesion=les, contrast_hu=contrast,
                             wide_point_spread=wide_point_spread, min_contrast_hu=min_contrast_hu,
                             low_contrast=low_contrast if not low_contrast_negatives or les.max() < 0.02 else 0.0,
                             wm_map=wm, dense_lesions=dense_lesions, csf_rim=csf_rim)
        else:  # mild intensity jitter: scanner calibration offsets of a few HU, contrast scale
            a = a * rng.uniform(0.95, 1.05) + rng.normal(0, 0.05)
        xs.append(a.copy())
        ys.append(b.copy())
        if wm_target:
            ws.append(wm[ctx].copy() if wm is not None else np.full(b.shape, -1.0, np.float32))
    return Batch(torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)[:, None]),
                 torch.from_numpy(np.stack(ws)[:, None].astype(np.float32)) if wm_target else None)


LOSSES = ("bce-dice-volume", "bce")


def loss_fn(logits, y, terms: str = LOSSES[0]):
    """BCE on the soft fraction + soft Dice (crops with lesion) + per-crop volume error; ``terms="bce"``: BCE alone.

    The volume term is normalised by (true sum + 50 px) so that lesion-free crops are punished for any
    diffuse background fraction (which, summed over a whole head, is what biased 1.0.0 by +13 mL). It weighs an
    over-read of an empty crop far above the same under-read of a full one, and soft Dice is no proper scoring
    rule; BCE alone is, so the summed fraction estimates the volume the net believes is there.
    """
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    if terms == "bce":
        return bce
    p = torch.sigmoid(logits)
    inter = (p * y).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)
    has = (y.sum((1, 2, 3)) > 1).float()
    vol = ((p.sum((1, 2, 3)) - y.sum((1, 2, 3))).abs() / (y.sum((1, 2, 3)) + 50)).clamp(max=2.0)
    return bce + 0.5 * (dice * has).sum() / (has.sum() + 1e-6) + 0.1 * vol.mean()


WM_LOSS_WEIGHT = 0.5


def wm_loss(logits, wm):
    """BCE of the white-matter head against the generator's white-matter fraction, where a map exists (>= 0)."""
    known = (wm >= 0).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, wm.clamp(min=0), reduction="none")
    return (bce * known).sum() / (known.sum() + 1e-6)


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    RUNS.mkdir(exist_ok=True)  # checkpoints go there from step 250
    rng = np.random.default_rng(args.seed)
    log = print
    wm = bool(args.insert_lesions or args.insert_patterns) or args.wm_gate
    st = load_split("train", args.n_train, log, args.cached_only, with_wm=wm,
                    min_head_contrast=args.min_head_contrast)
    n_analytic = len(st.imgs)  # stacks from here on are atlas heads
    if args.n_train_atlas:  # the same draws on the MNI152 atlas head, so the net does not learn one head's shape
        st.extend(load_split("train_atlas", args.n_train_atlas, log, args.cached_only, with_wm=wm,
                             min_head_contrast=args.min_head_contrast))
    n_ours = len(st.imgs)  # stacks from here on are another generator's (--extra-ncct)
    if args.extra_ncct:
        dirs = devcases.foreign_case_dirs(args.extra_ncct, args.n_extra)
        st.extend(load_cases((devcases.read_ncct_case(d) for d in dirs), len(dirs), "extra", log))
    imgs, tgts, index = st.imgs, st.tgts, st.index
    lesion_slices = [q for q, (v, k) in enumerate(index) if float(tgts[v][k].max()) > 0.3]
    log(f"train slices {len(index)}, with lesion {len(lesion_slices)}", flush=True)
    source = [0 if v < n_analytic else 1 if v < n_ours else 2 for v, _ in index]  # analytic, atlas, extra
    weights = None
    if args.atlas_share is not None or args.extra_ncct:
        a = np.mean([x == 1 for x in source if x < 2]) if args.atlas_share is None else args.atlas_share
        e = args.extra_share if args.extra_ncct else 0.0
        weights = source_shares(source, lesion_slices, {0: (1 - e) * (1 - a), 1: (1 - e) * a, 2: e})
    log(f"atlas heads: {np.mean([x == 1 for x in source]):.2f} of the slices, "
        f"{'as many' if args.atlas_share is None else args.atlas_share} of our crops; "
        f"extra heads {np.mean([x == 2 for x in source]):.2f} of the slices, "
        f"{args.extra_share if args.extra_ncct else 0} of the crops")
    net = UNet2D(args.channels, in_ch=2 * args.context + 1, levels=args.levels, wm_head=args.wm_gate)
    if args.init:  # continue training from a saved state dict (training/runs/wml-<version>.pt)
        net.load_state_dict(torch.load(args.init, map_location="cpu"))
        log(f"initialised from {args.init}")
    if args.init_onnx:  # continue from a shipped model (BatchNorm folded: statistics stay frozen)
        net.gate = False  # the shipped model has no white-matter head: compare on the lesion path alone
        err = load_onnx(net, args.init_onnx, torch.randn(2, 2 * args.context + 1, 96, 96), skip=("head_wm",))
        net.gate = args.wm_gate
        log(f"initialised from {args.init_onnx} (max |torch - onnx| {err:.1e}); BatchNorm statistics frozen")
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    net.to(device)
    log(f"training on {device}{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}, "
        f"crops drawn {f'in {args.workers} workers' if args.workers else 'in this process'}", flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    draw = functools.partial(
        sample_batch, imgs, tgts, index, lesion_slices, bs=args.batch, ctx=args.context, crop=args.crop,
        randomise=args.randomise, contrasts=st.contrasts, wide_point_spread=args.wide_point_spread,
        min_contrast_hu=args.min_lesion_contrast, weights=weights, insert=args.insert_lesions, wms=st.wms,
        spacings=st.spacings, insert_own_contrast=args.insert_own_contrast, insert_max_mm=args.insert_max_mm,
        wm_target=args.wm_gate, low_contrast=args.low_contrast, low_contrast_negatives=args.low_contrast_negatives,
        dense_lesions=args.dense_lesions, patterns=args.insert_patterns,
        pattern_style=args.pattern_style, csf_rim=not args.no_csf_rim)
    stream = crop_stream.batches(draw, rng, args.workers, args.seed, pin_memory=device.type == "cuda")
    t0 = time.time()
    step = 0
    budget = args.minutes * 60
    total = args.steps
    hist = []
    net.train()
    if args.init_onnx or args.freeze_norm:
        freeze_norm_stats(net)
    while step < total and time.time() - t0 < budget:
        # warm-up, then cosine decay on whichever runs out first: steps or the time budget
        prog = max(step / total, (time.time() - t0) / budget)
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * min(prog, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr
        b = Batch(*(None if t is None else t.to(device, non_blocking=True) for t in next(stream)))
        if args.wm_gate:
            lesion, wm_logits = net.heads(b.x)
            loss = loss_fn(lesion, b.y, args.loss) + WM_LOSS_WEIGHT * wm_loss(wm_logits, b.wm)
        else:
            loss = loss_fn(net.logits(b.x), b.y, args.loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        hist.append(loss.item())
        if step % 50 == 0:
            log(f"step {step}/{total} loss {np.mean(hist[-50:]):.4f} lr {lr:.2e} {time.time() - t0:.0f} s", flush=True)
        if args.checkpoint_every and step % args.checkpoint_every == 0:
            torch.save(net.state_dict(), RUNS / "wml-checkpoint.pt")
    net.cpu().eval()
    return {"net": net, "steps": step, "device": str(device), "workers": args.workers, "seconds": time.time() - t0, "final_loss": float(np.mean(hist[-50:]))}


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
            "context_slices": meta["context"],
            "window": [256 + meta["overlap"]] * 2,  # a 256 mm core: one tile for a head-sized field of view
            "overlap": meta["overlap"],
            "multiple_of": meta["multiple_of"],
            "batch": 4,
            "slab": 8,
            "tta": meta.get("tta", []),
            "tensor": {"name": "image", "shape": ["n", 2 * meta["context"] + 1, "h", "w"], "dtype": "float32"},
            **meta.get("inherited_input", {}),
        },
        "output": {
            "name": "fraction",
            "semantics": "per-voxel WML partial-volume fraction 0..1 on the model grid, resampled linearly to "
                         "the source grid; volume_ml = sum(fraction) * physical voxel volume / 1000",
            "mask_threshold": 0.5,
            "units": "1",
            # post-processing, chosen on the val split (training.evaluate --task wml --set val --sweep)
            "fraction_floor": meta.get("fraction_floor", 0.0),
            "support_threshold": meta.get("support_threshold", 0.0),
            "support_dilate_vox": meta.get("support_dilate_vox", 0),
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
    ap.add_argument("--n-train-atlas", type=int, default=0, help="cases from the train_atlas split (MNI152 head)")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--loss", choices=LOSSES, default=LOSSES[0],
                    help="the lesion loss: BCE + soft Dice + per-crop volume (every shipped model), or BCE alone")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--levels", type=int, default=2, help="U-Net depth (2: RF 44 px; 3: RF 92 px)")
    ap.add_argument("--crop", type=int, default=96, help="training crop side (px at 1 mm)")
    ap.add_argument("--context", type=int, default=1, help="neighbouring slices on each side as input channels")
    ap.add_argument("--checkpoint-every", type=int, default=250)
    ap.add_argument("--init", type=Path, default=None, help="start from these weights (state dict) instead of random")
    ap.add_argument("--freeze-norm", action="store_true",
                    help="keep BatchNorm statistics frozen (resuming a run that began with --init-onnx)")
    ap.add_argument("--init-onnx", type=Path, default=None,
                    help="start from a shipped model.onnx (BatchNorm folded; see training.warmstart)")
    ap.add_argument("--randomise", type=float, default=0.0,
                    help="fraction of crops re-rendered with a random scanner (training.augment)")
    ap.add_argument("--wide-point-spread", action="store_true",
                    help="re-render with training.augment.point_spread (the 1.6.0 experiment) instead of kernel_blur")
    ap.add_argument("--min-lesion-contrast", type=float, default=None, metavar="HU",
                    help="darken fainter labelled lesions to this contrast (augment.lesion_contrast_floor)")
    ap.add_argument("--min-head-contrast", type=float, default=None, metavar="HU",
                    help="leave out the training heads whose lesion was drawn fainter than this (lesion-free kept)")
    ap.add_argument("--insert-lesions", type=float, default=0.0, metavar="P",
                    help="paste lesions into the white matter of this share of the crops (training.lesion_insertion)")
    ap.add_argument("--insert-own-contrast", action="store_true",
                    help="pasted lesions at the head's own lesion contrast x U(0.6, 1.0) (the 1.16.1 recipe)")
    ap.add_argument("--insert-max-mm", type=float, default=DIAMETER_MM[1], help="largest pasted lesion diameter (mm)")
    ap.add_argument("--insert-patterns", type=float, default=0.0, metavar="P",
                    help="draw scattered foci and periventricular halos into the white matter of this share of the "
                         "crops (training.lesion_patterns; --insert-own-contrast applies to them too)")
    ap.add_argument("--pattern-style", choices=sorted(STYLES), default="loose",
                    help="the ranges --insert-patterns draws from (training.lesion_patterns.STYLES)")
    ap.add_argument("--low-contrast", type=float, default=0.0, metavar="P",
                    help="share of randomised crops with CSF raised and grey matter pulled towards white matter "
                         "(augment.low_contrast_head; the 1.18.0 recipe)")
    ap.add_argument("--low-contrast-negatives", action="store_true",
                    help="--low-contrast on crops without labelled lesion only (the 1.18.1 recipe)")
    ap.add_argument("--dense-lesions", type=float, default=0.0, metavar="P",
                    help="share of the randomised lesion contrast changes made 3-8 HU darker (the 1.18.2 recipe)")
    ap.add_argument("--no-csf-rim", action="store_true",
                    help="no unlabelled darkening along CSF boundaries in re-rendered crops (augment.normal_variation)")
    ap.add_argument("--wm-gate", action="store_true",
                    help="a second head learns the white-matter fraction; the exported lesion fraction is gated by it")
    ap.add_argument("--atlas-share", type=float, default=None, metavar="S",
                    help="draw this fraction of the crops from the atlas heads (default: in proportion to slices)")
    ap.add_argument("--extra-ncct", type=Path, default=None, metavar="DIR",
                    help="heads of another generator in devset's layout (training.devcases.foreign_case_dirs)")
    ap.add_argument("--n-extra", type=int, default=None, help="the first N cases of --extra-ncct (default: all)")
    ap.add_argument("--extra-share", type=float, default=0.25, metavar="S",
                    help="draw this fraction of the crops from the --extra-ncct heads")
    ap.add_argument("--tta", default="", help="test-time flips written into the manifest, e.g. 'lr' (2 passes)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (cuda where there is one)")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes drawing the crops (0: in the training process, repeatable; training.crop_stream)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cached-only", action="store_true", help="use only cases already in training/cache")
    ap.add_argument("--out", type=Path, default=Path("service/svdmark/data/models/wml-ncct/1.1.0"))
    ap.add_argument("--save-suffix", default="", help="suffix of the saved state dict name in training/runs/")
    args = ap.parse_args(argv)
    res = train(args)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(res["net"].state_dict(), RUNS / f"wml-{args.out.name}{args.save_suffix}.pt")
    example = torch.randn(2, 2 * args.context + 1, 96, 96)
    sha = export_onnx(res["net"], example, args.out / "model.onnx", "image", "fraction",
                      {"image": {0: "n", 2: "h", 3: "w"}, "fraction": {0: "n", 2: "h", 3: "w"}})
    mult = 2 ** args.levels
    meta = {
        "context": args.context,
        "tta": [t for t in args.tta.split(",") if t],
        "overlap": -(-res["net"].receptive_field // mult) * mult,  # ≥ receptive field: tiles = whole image
        "multiple_of": mult,
        "self_test_kwargs": SELF_TEST_KWARGS,
        "self_test_range": [0.0, 0.0],  # filled in by training.model_card (sanity_bounds)
        "inherited_input": inherited_input(args.init_onnx),
        "training": {"command": "python -m training.train_wml "
                     + " ".join(argv if argv is not None else __import__("sys").argv[1:]), "steps": res["steps"],
                     "seconds": round(res["seconds"]), "final_loss": res["final_loss"], "seed": args.seed,
                     "n_train_cases": args.n_train,
                     "n_train_atlas_cases": args.n_train_atlas, "torch": torch.__version__,
                     "device": res["device"], "workers": res["workers"],
                     **({"extra_ncct": str(args.extra_ncct), "extra_share": args.extra_share}
                        if args.extra_ncct else {}),
                     "environment": data.training_environment()},
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest(args.out.name, sha, meta), indent=2) + "\n")
    print(f"wrote {args.out} sha256 {sha}")


SELF_TEST_KWARGS = {"seed": 0, "matrix": 256, "slice_thickness": 5.0, "tilt_deg": 0.0, "wml_ml": 10.0, "mimics": True}

if __name__ == "__main__":
    main()
