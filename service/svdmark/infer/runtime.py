"""onnxruntime sessions and model execution on a ``Volume``.

Providers: TensorRT → CUDA → CPU, each only where onnxruntime lists it *and*
a session actually loads with it (a provider whose libraries are missing
makes onnxruntime fall back silently or raise; both are detected). The choice
is logged once per model as one line.

Two kinds of model input (``manifest["input"]["kind"]``):

``slice2d``  (WML) each source slice is resampled in-plane to the model
             spacing, normalised, and run through a fully convolutional 2-D
             network in tiles of ``window`` pixels overlapping by ``overlap``;
             only the central part of each tile is kept (the overlap is at least
             the network's receptive field), so tiled inference equals
             whole-image inference while memory stays bounded by one tile
             batch. With ``context_slices`` = c > 0 (2.5-D) the c neighbouring
             source slices on each side are extra input channels (the stack's
             end slices repeat). A stack thinner than 0.9 × the manifest's
             ``min_slice_mm`` is first averaged into slabs about that thick
             (``preprocess.slab_group``), and each source slice takes its
             slab's output. Output: per-voxel lesion fraction on the source grid.
``patch3d``  (CMB) a classical candidate stage (multi-scale LoG, parameters in
             ``manifest["candidates"]``) proposes dark blobs; isotropic patches
             around them are classified by the network in fixed-size batches,
             which also regresses the diameter. With ``input.tta`` (names from
             ``PATCH_TTA``) each patch whose first reading reaches
             ``input.tta_from`` is read again in every combination of the
             named flips and the in-plane transposition (the symmetries the
             classifier was trained under) and the readings are averaged; a
             patch below ``tta_from`` keeps its single reading, which is exact
             for any threshold above 1 - (1 - tta_from) / passes.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from ..config import infer_threads_from_env, trt_cache_from_env
from ..domain import InputSpec, ModelSpec, Task, Volume
from ..errors import ModelError
from ..logs import event
from . import preprocess as pp

log = logging.getLogger("svdmark.infer")

DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_SHORT = {"TensorrtExecutionProvider": "tensorrt", "CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}


@dataclass(frozen=True)
class Candidate:
    """One CMB candidate in source index space."""

    index: tuple[float, float, float]  # (k, i, j), continuous
    probability: float  # classifier output 0..1
    diameter_mm: float
    response: float = 0.0  # LoG response of the candidate stage


@dataclass(frozen=True)
class ModelOutput:
    task: Task
    model_sha256: str
    provider: str  # short name: tensorrt / cuda / cpu
    seconds: float
    fraction: np.ndarray | None = None  # WML: (z, y, x) float32 lesion fraction 0..1 on the source grid
    passes: tuple[np.ndarray, ...] = ()  # WML: the fraction of each test-time-augmentation pass (mean = fraction)
    candidates: tuple[Candidate, ...] = ()  # CMB: all candidates (thresholding happens in measure)
    extras: dict = field(default_factory=dict, compare=False)


def _default_threads() -> int:
    return infer_threads_from_env() or max(1, min(4, os.cpu_count() or 1))


class Runtime:
    """Caches one onnxruntime session per model sha256."""

    def __init__(
        self,
        providers: Sequence[str] | None = None,
        intra_op_num_threads: int | None = None,
        trt_cache_dir: str | None = None,
        session_factory: Callable | None = None,
    ):
        import onnxruntime as ort

        ort.set_default_logger_severity(3)  # errors only: provider fallbacks are reported by us, in one line
        self._ort = ort
        self.providers = tuple(providers) if providers else DEFAULT_PROVIDERS
        self.threads = intra_op_num_threads or _default_threads()
        self.trt_cache_dir = trt_cache_dir or trt_cache_from_env()
        self._factory = session_factory or ort.InferenceSession
        self._sessions: dict[str, tuple[object, str]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ sessions
    def _options(self):
        so = self._ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.use_deterministic_compute = True
        so.log_severity_level = 3
        return so

    def _provider_entry(self, name: str):
        if name == "CUDAExecutionProvider":
            return (name, {"cudnn_conv_algo_search": "DEFAULT", "use_tf32": 0})
        if name == "TensorrtExecutionProvider" and self.trt_cache_dir:
            return (name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": self.trt_cache_dir})
        return name

    def session(self, model: ModelSpec):
        """(session, provider short name) for a model, created once."""
        with self._lock:
            hit = self._sessions.get(model.sha256)
            if hit is not None:
                return hit
            available = set(self._ort.get_available_providers())
            tried: list[str] = []
            for name in self.providers:
                if name not in available:
                    tried.append(f"{_SHORT.get(name, name)}: not installed")
                    continue
                chain = [self._provider_entry(name)]
                if name != "CPUExecutionProvider":
                    chain.append("CPUExecutionProvider")
                noise = ""
                try:
                    if name == "CPUExecutionProvider":
                        sess = self._factory(str(model.path), sess_options=self._options(), providers=chain)
                    else:  # a GPU provider that fails prints a wall of text from C++ and Python: capture it
                        with _captured_output() as captured:
                            sess = self._factory(str(model.path), sess_options=self._options(), providers=chain)
                        noise = captured.text
                except Exception as exc:  # onnxruntime raises plain RuntimeError/Fail for provider load errors
                    tried.append(f"{_SHORT.get(name, name)}: {_reason(str(exc)) or type(exc).__name__}")
                    continue
                got = sess.get_providers()[0] if sess.get_providers() else ""
                if got != name:
                    tried.append(f"{_SHORT.get(name, name)}: {_reason(noise) or 'did not load'}")
                    continue
                short = _SHORT.get(name, name)
                event(log, "inference_provider", model=model.label, provider=short, threads=self.threads)
                if tried:  # why faster providers were passed over: detail for whoever tunes the host
                    event(log, "inference_providers_skipped", logging.DEBUG, model=model.label,
                          skipped="; ".join(tried))
                self._sessions[model.sha256] = (sess, short)
                return sess, short
            raise ModelError(f"no onnxruntime provider could load {model.path}: {'; '.join(tried)}")

    # ------------------------------------------------------------------ run
    def run(self, model: ModelSpec, volume: Volume) -> ModelOutput:
        spec = model.manifest.input
        kind = spec.kind if spec is not None else None
        t0 = time.perf_counter()
        sess, provider = self.session(model)
        if kind == "slice2d":
            frac, passes = self._run_slice2d(sess, spec, volume)
            return ModelOutput(Task(model.task), model.sha256, provider, time.perf_counter() - t0, fraction=frac,
                               passes=passes)
        if kind == "patch3d":
            cands, extras = self._run_patch3d(sess, spec, model.manifest.candidates or {}, volume)
            return ModelOutput(
                Task(model.task), model.sha256, provider, time.perf_counter() - t0, candidates=cands, extras=extras
            )
        raise ModelError(f"{model.label}: unknown input kind {kind!r} in manifest")

    # ------------------------------------------------------------------ 2-D sliding window
    def _run_slice2d(self, sess, spec: InputSpec, volume: Volume, window: int | None = None):
        grid = pp.PlaneGrid.make(volume.shape[1:], volume.pixel_spacing, spec.spacing_mm[0])
        win = int(window or spec.window[0])
        margin = spec.overlap // 2
        mult = spec.multiple_of
        bg = float(pp.normalise(np.array([spec.pad_value], np.float32), spec.normalisation)[0])
        batch = spec.batch or 4
        in_name = sess.get_inputs()[0].name
        # thin stacks: averaged into slabs as thick as the model's thinnest training slices, run, expanded back
        group = pp.slab_group(volume.slice_spacing, spec.min_slice_mm)
        source = pp.average_slabs(volume.array, group)
        shape = source.shape
        out = np.empty(shape, np.float32)
        slab = spec.slab
        ctx = spec.context_slices  # 2.5-D: neighbours on each side as extra channels
        nz = shape[0]
        base = lambda x: sess.run(None, {in_name: x})[0]  # noqa: E731
        nets = [flipped(base, c) for c in flip_combos(spec.tta)]
        passes = [np.empty(shape, np.float32) for _ in nets] if len(nets) > 1 else [out]
        for k0 in range(0, nz, slab):
            k1 = min(nz, k0 + slab)
            lo, hi = max(0, k0 - ctx), min(nz, k1 + ctx)
            planes = grid.to_model(source[lo:hi])
            planes = pp.normalise(planes, spec.normalisation)
            if ctx:
                idx = np.clip(np.arange(k0, k1)[:, None] + np.arange(-ctx, ctx + 1)[None, :], 0, nz - 1) - lo
                planes = planes[idx]  # (n, 2*ctx+1, h, w); edge slices repeat at the ends of the stack
            for net, dst in zip(nets, passes):
                pred = tiled_2d(net, planes, win, margin, mult, bg, batch)
                dst[k0:k1] = np.clip(grid.to_source(pred), 0.0, 1.0)
        if len(passes) > 1:
            out[:] = np.mean(passes, axis=0)
        n = volume.shape[0]
        out = pp.expand_slabs(out, group, n)
        passes = [pp.expand_slabs(p, group, n) for p in passes]
        return out, tuple(passes) if len(passes) > 1 else ()

    # ------------------------------------------------------------------ 3-D candidates + classifier
    def _run_patch3d(self, sess, spec: InputSpec, candidates: Mapping, volume: Volume):
        norm, cents, resp, sig, ref, found = pp.cmb_candidates(volume, candidates, spec.normalisation, self.threads)
        batch = spec.batch or 64
        in_name = sess.get_inputs()[0].name
        probs = np.zeros(len(cents), np.float32)
        diams = np.zeros(len(cents), np.float32)
        net = lambda x: sess.run(None, {in_name: x})[0]  # noqa: E731
        combos = flip_combos(spec.tta, PATCH_TTA)
        for b0 in range(0, len(cents), batch):
            patches = pp.cmb_patches(norm, volume, cents[b0 : b0 + batch], spec.raw, self.threads)
            res = patch_averaged(net, patches, combos, spec.tta_from, batch)
            probs[b0 : b0 + batch] = res[:, 0]
            diams[b0 : b0 + batch] = res[:, 1]
        cands = tuple(
            Candidate((float(c[0]), float(c[1]), float(c[2])), float(p), float(d), float(r))
            for c, p, d, r in zip(cents, probs, diams, resp)
        )
        return cands, {"n_candidates": len(cands), "n_candidates_found": found, "reference_intensity": ref}


class _captured_output:
    """Redirect the process-level stdout/stderr (C++ and Python) into a temporary file.

    The redirect is process-wide, so the log handlers' locks are held while it lasts: another thread's log line
    (a delivery, a received series) waits and is written once the real stderr is back, instead of vanishing into
    the capture."""

    def __enter__(self):
        import sys
        import tempfile

        self.text = ""
        self._handlers = list(logging.getLogger().handlers)
        for h in self._handlers:
            h.acquire()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            self._tmp = tempfile.TemporaryFile(mode="w+b")
            self._saved = (os.dup(1), os.dup(2))
            os.dup2(self._tmp.fileno(), 1)
            os.dup2(self._tmp.fileno(), 2)
        except BaseException:
            self._release()
            raise
        return self

    def _release(self) -> None:
        for h in reversed(self._handlers):
            h.release()

    def __exit__(self, *exc):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        os.close(self._saved[0])
        os.close(self._saved[1])
        self._release()
        self._tmp.seek(0)
        self.text = self._tmp.read().decode("utf-8", "replace")
        self._tmp.close()
        return False


def _reason(text: str) -> str:
    """The one informative phrase of an onnxruntime provider failure."""
    import re

    m = re.search(r"with error: ([^\n\x1b]+)", text)
    if m:
        return m.group(1).strip()[:160]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("*")]
    return lines[0][:160] if lines else ""


# the axes of domain.TTA_NAMES' flips. slice2d: of an (n, c, h, w) batch: width; the context channels
TTA_FLIPS = {"lr": (3,), "slices": (1,)}
# patch3d: of an (n, c, normal, column, row) batch; "transpose" swaps the two in-plane axes (a 90° rotation with a
# flip), applied after the flips
PATCH_TTA = {"normal": (2,), "column": (3,), "row": (4,), "transpose": ()}


def flip_combos(tta: Sequence[str], known: Mapping[str, tuple] = TTA_FLIPS) -> list[tuple[str, ...]]:
    """Every combination of the flips named in ``tta`` (manifest ``input.tta``), identity first, fixed order."""
    unknown = set(tta) - set(known)
    if unknown:
        raise ModelError(f"unknown test-time flips {sorted(unknown)} in manifest; known: {sorted(known)}")
    combos: list[tuple[str, ...]] = [()]
    for name in tta:
        combos += [c + (name,) for c in combos]
    return combos


def flipped(fn: Callable[[np.ndarray], np.ndarray], combo: Sequence[str]) -> Callable[[np.ndarray], np.ndarray]:
    """``fn`` run on the input flipped by ``combo`` and its prediction un-flipped (the channel flip has no
    output image to undo)."""
    axes = tuple(a for name in combo for a in TTA_FLIPS[name])
    if not axes:
        return fn

    def run(x: np.ndarray) -> np.ndarray:
        y = fn(np.ascontiguousarray(np.flip(x, axes)))
        return np.flip(y, tuple(a for a in axes if a != 1)).astype(np.float32)

    return run


def patch_view(x: np.ndarray, combo: Sequence[str]) -> np.ndarray:
    """A batch of 3-D patches (n, c, normal, column, row) flipped and transposed as ``combo`` (``PATCH_TTA``) says."""
    axes = tuple(a for name in combo for a in PATCH_TTA[name])
    y = np.flip(x, axes) if axes else x
    if "transpose" in combo:
        y = np.swapaxes(y, 3, 4)
    return np.ascontiguousarray(y)


def patch_averaged(fn: Callable[[np.ndarray], np.ndarray], patches: np.ndarray, combos: Sequence[Sequence[str]],
                   tta_from: float = 0.0, batch: int | None = None) -> np.ndarray:
    """``fn``'s per-patch output ((n, k): probability first) averaged over ``combos`` (``flip_combos(...,
    PATCH_TTA)``, identity first) for the patches whose first reading is at least ``tta_from``; the others keep
    their first reading. A classifier's output does not depend on the patch's orientation, so nothing is undone.
    The re-read views go to ``fn`` stacked, ``batch`` at a time (default: all at once)."""
    res = np.array(fn(patches), np.float32)
    redo = np.flatnonzero(res[:, 0] >= tta_from) if len(combos) > 1 else np.zeros(0, int)
    if len(redo):
        sub = patches[redo]
        views = np.concatenate([patch_view(sub, combo) for combo in combos[1:]])
        step = batch or len(views)
        out = np.concatenate([fn(views[i:i + step]) for i in range(0, len(views), step)]).astype(np.float64)
        acc = res[redo] + out.reshape(len(combos) - 1, len(redo), -1).sum(axis=0)
        res[redo] = (acc / len(combos)).astype(np.float32)
    return res


def flip_averaged(fn: Callable[[np.ndarray], np.ndarray], tta: Sequence[str]) -> Callable[[np.ndarray], np.ndarray]:
    """``fn`` averaged over every combination of the flips named in ``tta`` (manifest ``input.tta``).

    ``"lr"`` mirrors the plane left-right, ``"slices"`` reverses the order of the 2.5-D context
    channels; each prediction is un-flipped before averaging. The set and order of passes is fixed,
    so the result is deterministic. An empty ``tta`` returns ``fn`` itself.
    """
    combos = flip_combos(tta)
    if len(combos) == 1:
        return fn
    passes = [flipped(fn, c) for c in combos]

    def averaged(x: np.ndarray) -> np.ndarray:
        acc = passes[0](x).astype(np.float32)
        for p in passes[1:]:
            acc = acc + p(x)
        return acc / len(passes)

    return averaged


def tiled_2d(fn, planes: np.ndarray, window: int, margin: int, multiple: int, bg: float, batch: int) -> np.ndarray:
    """Run a fully convolutional 2-D ``fn`` ((n,c,h,w) → (n,1,h,w)) over planes (n, H, W) or (n, c, H, W) in tiles.

    The planes are padded by ``margin`` (value ``bg``); tiles of ``window`` step
    by ``window - 2*margin`` and contribute only their central part, so the
    result does not depend on the tiling when ``margin`` covers the receptive
    field. Tile origins are multiples of ``multiple`` (pooling alignment).
    """
    if planes.ndim == 3:
        planes = planes[:, None]
    n, C, H, W = planes.shape
    core = window - 2 * margin
    if core <= 0 or core % multiple:
        raise ModelError(f"window {window} with overlap {2 * margin} leaves an invalid tile core")
    ny = max(1, -(-H // core))
    nx = max(1, -(-W // core))
    PH, PW = ny * core + 2 * margin, nx * core + 2 * margin
    if ny == 1 and nx == 1:  # single tile: shrink to the image (rounded up to the pooling multiple)
        PH = -(-(H + 2 * margin) // multiple) * multiple
        PW = -(-(W + 2 * margin) // multiple) * multiple
    padded = np.full((n, C, PH, PW), bg, np.float32)
    padded[:, :, margin : margin + H, margin : margin + W] = planes
    out = np.zeros((n, H, W), np.float32)
    if ny == 1 and nx == 1:
        for b0 in range(0, n, batch):
            res = fn(np.ascontiguousarray(padded[b0 : b0 + batch]))
            out[b0 : b0 + batch] = res[:, 0, margin : margin + H, margin : margin + W]
        return out
    tiles = [(ty * core, tx * core) for ty in range(ny) for tx in range(nx)]
    for y0, x0 in tiles:
        h = min(core, H - y0)
        w = min(core, W - x0)
        for b0 in range(0, n, batch):
            x = padded[b0 : b0 + batch, :, y0 : y0 + window, x0 : x0 + window]
            res = fn(np.ascontiguousarray(x))
            out[b0 : b0 + batch, y0 : y0 + h, x0 : x0 + w] = res[:, 0, margin : margin + h, margin : margin + w]
    return out
