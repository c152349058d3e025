"""Per-sample domain randomisation of training crops, in the tradition of SynthSeg (Billot et al. 2023).

The phantom generator fixes one look per case; a model that sees only that look learns it (the
hidden-set failure of wml-ncct 1.2.0: lesion-free heads read 6–8 mL, large loads under-read). So
every crop the nets see is re-rendered here with its own scanner: tissue intensities through a random monotone
HU map (calibration offset, grey/white contrast, CSF level), a random noise level *and texture* (white,
soft-kernel correlated, sharp-kernel high-pass), the point spread (blur or sharpening: kernel, slice profile;
wider and anisotropic with ``wide_point_spread``), in-plane resolution loss, low-frequency cupping / bias,
skull-base streaks, and per-slice motion offsets between the 2.5-D context channels. The target is never
touched except by the geometric flips, so the label stays the physical lesion fraction.

All functions work on the nets' normalised inputs: WML crops are (C, h, w) in units of
``NORMALISATION["scale"]`` HU around ``center`` (train_wml), CMB patches are (n, ch, s, s, s) in
units of the foreground median. Parameter ranges are stated in physical units next to each draw.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

HU_CENTER, HU_SCALE, HU_CLIP = 30.0, 20.0, (-2.0, 4.0)  # train_wml.NORMALISATION


def _hu(a):
    return a * HU_SCALE + HU_CENTER


def _norm(hu):
    return np.clip((hu - HU_CENTER) / HU_SCALE, *HU_CLIP)


def monotone_hu_map(rng: np.random.Generator):
    """A random increasing map of brain HU: offset ±4 HU, piecewise slopes 0.75–1.35 over 0–60 HU knots.

    Brain tissue (CSF 0–15, WM 20–32, GM 32–45 HU) moves by a few HU each, independently, so grey/white
    contrast, CSF level and lesion contrast all vary; bone and air (outside the clip) are unaffected in
    effect.
    """
    knots = np.array([-10.0, 10.0, 25.0, 40.0, 60.0, 110.0])
    slopes = rng.uniform(0.75, 1.35, len(knots) - 1)
    slopes[-1] = 1.0
    vals = np.concatenate([[0.0], np.cumsum(np.diff(knots) * slopes)])
    vals += knots[2] - np.interp(knots[2], knots, vals) + rng.normal(0, 4.0)  # WM level stays near, ± offset
    return lambda hu: np.interp(hu, knots, vals, left=None, right=None) + np.where(
        hu > knots[-1], hu - knots[-1], 0) + np.where(hu < knots[0], hu - knots[0], 0)


def noise_field(rng: np.random.Generator, shape, sd: float) -> np.ndarray:
    """Noise of one of three textures: white, soft-kernel (smoothed), sharp-kernel (high-pass)."""
    n = rng.standard_normal(shape).astype(np.float32)
    kind = rng.integers(3)
    sig = (0,) * (len(shape) - 2) + (rng.uniform(0.6, 1.6),) * 2
    if kind == 1:
        n = ndimage.gaussian_filter(n, sig)
    elif kind == 2:
        n = n - ndimage.gaussian_filter(n, sig)
    n /= max(float(n.std()), 1e-6)
    return n * np.float32(sd)


def smooth_field(rng: np.random.Generator, shape2d, amp: float) -> np.ndarray:
    """A low-frequency field (cupping, bias): a random quadratic plus a radial term, peak ~ ``amp``."""
    h, w = shape2d
    y = np.linspace(-1, 1, h)[:, None]
    x = np.linspace(-1, 1, w)[None, :]
    c = rng.normal(0, 1, 6)
    f = c[0] * x + c[1] * y + c[2] * x * y + c[3] * x * x + c[4] * y * y + c[5] * (x * x + y * y)
    return (f / max(float(np.abs(f).max()), 1e-6) * amp).astype(np.float32)


def streaks(rng: np.random.Generator, shape2d, amp: float) -> np.ndarray:
    """A few straight dark/bright bands through the plane, as beam hardening makes at the skull base."""
    h, w = shape2d
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w), np.float32)
    for _ in range(rng.integers(1, 4)):
        th = rng.uniform(0, np.pi)
        d = (xx - rng.uniform(0, w)) * np.sin(th) - (yy - rng.uniform(0, h)) * np.cos(th)
        out += np.float32(rng.choice([-1, 1]) * amp * rng.uniform(0.4, 1.0)) * np.exp(
            -0.5 * (d / rng.uniform(0.8, 2.5)) ** 2)
    return out


def normal_variation(hu: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
                     csf_rim: bool = True) -> np.ndarray:
    """Unlabelled variation of normal brain tissue, so that faint diffuse darkening is not read as WML.

    Two terms, drawn independently, added to soft tissue (15–60 HU) only and never to the label:
    - a band-limited texture (σ 2–6 px, sd 0.7–2.5 HU): grey/white heterogeneity, vessels, gliosis-free noise;
    - a CSF-adjacent halo (2–6 HU darker, e-folding 1–3 mm from every CSF boundary, in-plane): partial volume
      and the normal periventricular rim. A uniform thin rim around *every* CSF surface is not a lesion;
      lesions keep their own shape and extent. (Added for wml-ncct 1.4.0 after the stress set showed
      false positives in normal white matter next to the ventricles: see the model card.)
    ``csf_rim=False``: the halo is drawn (the same random numbers) but not added; a labelled halo of that look in
    another generator's heads is not taught as normal tissue (session 40's probe).
    """
    out = hu.copy()
    tissue = ((hu > 15) & (hu < 60)).astype(np.float32)
    if rng.random() < 0.35 * strength:
        s = rng.uniform(2, 6)
        f = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), (0.5, s, s))
        out += f / max(float(f.std()), 1e-6) * np.float32(rng.uniform(0.7, 2.5)) * tissue
    if rng.random() < 0.3 * strength:
        sm = ndimage.gaussian_filter(hu, (0, 1.0, 1.0))
        csf = (sm > -4) & (sm < 14)
        amp, lam = np.float32(rng.uniform(2, 6)), np.float32(rng.uniform(1, 3))
        for c in range(hu.shape[0]):
            if csf[c].any():
                d = ndimage.distance_transform_edt(~csf[c]).astype(np.float32)
                out[c] -= amp * np.exp(-d / lam) * tissue[c] * np.float32(csf_rim)
    return out


def subthreshold_hypodensity(hu: np.ndarray, rng: np.random.Generator, lesion: np.ndarray | None,
                             contrast_hu: float) -> np.ndarray:
    """Unlabelled white-matter darkening fainter than half the lesion contrast: not lesion, by definition.

    The label is the partial-volume occupancy of the lesion, whose edge sits at half its full contrast (the
    generator's soft edge). Real leukoaraiosis fades out over millimetres (the WMH "penumbra": Maillard et al.,
    Stroke 2011) and ageing white matter is faintly rarefied in patches; a model that maps every HU of darkening
    to lesion fraction sums such tissue into millilitres. Two unlabelled terms, each at most 0.35 × the case's
    lesion contrast ``contrast_hu``: a margin below the labelled edge at half the contrast that the uneven slopes
    of ``monotone_hu_map`` do not close, since the darkened tissue lies within the lesion's own HU range (at most
    about 0.49 after the map). On soft tissue (15–45 HU) where no lesion lies within 2 px in-plane or one slice
    through-plane:
    - a halo around the labelled lesions, e-folding 1.5–6 mm (in-plane);
    - patches of a smooth random field (σ 3–8 px), anywhere, so lesion-free heads carry them too.
    """
    out = hu.copy()
    amp = np.float32(rng.uniform(0.1, 0.35) * contrast_hu)
    shape = np.zeros(hu.shape, np.float32)
    les = np.zeros(hu.shape, bool) if lesion is None else lesion >= 0.5
    if les.any() and rng.random() < 0.6:
        lam = rng.uniform(1.5, 6.0)
        for c in range(hu.shape[0]):
            if les[c].any():
                shape[c] = np.exp(-ndimage.distance_transform_edt(~les[c]) / lam)
    if rng.random() < 0.6:
        s = rng.uniform(3.0, 8.0)
        f = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), (0.7, s, s))
        f = np.clip(f / max(float(f.std()), 1e-6) - rng.uniform(0.5, 1.5), 0, None)
        shape = np.maximum(shape, f / max(float(f.max()), 1e-6))
    near = ndimage.binary_dilation(lesion > 0.02, np.ones((3, 5, 5), bool)) if lesion is not None else False
    keep = (hu > 15) & (hu < 45) & ~near
    out -= amp * shape * keep
    return out


def white_matter_level(hu: np.ndarray, lo: float = 15.0, hi: float = 42.0, min_voxels: int = 500) -> float | None:
    """The crop's white-matter HU: the mode of its soft-tissue histogram (0.5 HU bins, smoothed over 1 HU).

    White matter is the largest brain tissue in every crop that holds brain; None when the crop has fewer
    than ``min_voxels`` voxels in ``lo``..``hi`` HU (skull base, vertex, outside the head)."""
    v = hu[(hu > lo) & (hu < hi)]
    if v.size < min_voxels:
        return None
    h, e = np.histogram(v, bins=np.arange(lo, hi + 0.5, 0.5))
    return float(e[int(np.argmax(ndimage.gaussian_filter1d(h.astype(np.float32), 2.0)))] + 0.25)


def crop_white_matter_level(hu: np.ndarray, wm: np.ndarray | None, lesion: np.ndarray | None) -> float | None:
    """The white-matter HU of a (C, h, w) crop's centre slice: the median over the generator's white-matter map
    (fraction >= 0.9, no lesion) where the crop has one with 200 such voxels, else ``white_matter_level``, which
    reads atlas heads 1-4 HU high (their cortex and partial volume widen the mode)."""
    c = hu.shape[0] // 2
    if wm is not None:
        sel = wm[c] >= 0.9
        if lesion is not None:
            sel &= lesion[c] < 0.02
        if sel.sum() >= 200:
            return float(np.median(hu[c][sel]))
    return white_matter_level(hu[c])


def low_contrast_head(hu: np.ndarray, rng: np.random.Generator, contrast_hu: float,
                      wm_level: float | None = None) -> np.ndarray:
    """Cerebrospinal fluid raised towards the lesions' attenuation, grey matter pulled towards white matter.

    On heads built by other code, much of 1.12.0's false millilitres lies in the ventricles and sulci of heads whose
    CSF is within 11-16 HU of white matter (development ``choose``, ``training.false_ml``: median 5.0 mL off the
    lesions in those seven heads, 1.3 mL where the gap is 20 HU or more); our generator draws CSF 13-27 HU and grey
    matter 6.5-11 HU from white matter. (wml-ncct 1.18.0 and 1.18.1 trained with this map; neither read those heads
    lower: training/README.md, session 24.) Real heads reach such levels (beam hardening, low kV,
    partial volume of thick slices, ageing white matter). A monotone map, labels untouched:
    - everything from ``wm - max(1.3 x contrast, 6) - 2`` HU (the labelled lesions' own range) up to white matter
      keeps its HU, so the lesion contrast stays as drawn;
    - below that, down to 0 HU, the contrast is scaled by U(0.25, 0.7) (CSF ends 0.25-0.7 x as far below the
      lesions' floor); -10..0 HU bridges to the clip level, so fat and air stay where they are;
    - with probability 0.5, from 2 HU above white matter to 50 HU the contrast is scaled by U(0.45, 0.85) and
      50-80 HU bridges back to identity (grey matter closer to white matter; bone, vessels unchanged).
    ``wm_level``: the crop's white-matter HU (``crop_white_matter_level``); None: found without a map. A crop without
    enough brain is returned unchanged.
    """
    wm = crop_white_matter_level(hu, None, None) if wm_level is None else wm_level
    if wm is None:
        return hu
    k1 = wm - max(1.3 * float(contrast_hu), 6.0) - 2.0  # 2 HU margin: the mode may sit above the WM mean
    if k1 <= 1.0:
        return hu
    s = rng.uniform(0.25, 0.7)
    xs, ys = [-10.0, 0.0, k1], [-10.0, k1 - s * k1, k1]
    g_hi = wm + 2.0
    if rng.random() < 0.5 and g_hi < 48.0:
        g = rng.uniform(0.45, 0.85)
        xs += [g_hi, 50.0, 80.0]
        ys += [g_hi, g_hi + g * (50.0 - g_hi), 80.0]
    else:
        xs.append(80.0)
        ys.append(80.0)
    inside = (hu > -10.0) & (hu < 80.0)
    out = hu.copy()
    out[inside] = np.interp(hu[inside], xs, ys).astype(np.float32)
    return out


def lesion_contrast_floor(a: np.ndarray, lesion: np.ndarray, contrast_hu: float | None,
                          min_contrast_hu: float | None) -> tuple[np.ndarray, float | None]:
    """Darken a crop's labelled lesion so that its full contrast is at least ``min_contrast_hu``.

    The generator draws lesion contrasts of 3–10 HU, and ``randomise_ct`` may take 1.5 HU off: a labelled lesion
    can then be fainter than the unlabelled normal variation of the same crops (texture sd up to 2.5 HU,
    sub-threshold patches up to 0.35 × contrast, CT noise 3–5 HU). The model learns from such labels that
    any faint darkening of white matter is lesion, and sums it into millilitres on lesion-free heads. With a
    floor, a label always marks darkening beyond what normal tissue does (the wml-ncct 1.8.0 experiment).
    Returns the crop (normalised units) and its new contrast; unchanged when either number is unknown.
    """
    if min_contrast_hu is None or contrast_hu is None or contrast_hu >= min_contrast_hu:
        return a, contrast_hu
    extra = (min_contrast_hu - contrast_hu) / HU_SCALE
    return (a - lesion.astype(np.float32) * np.float32(extra)).astype(np.float32), float(min_contrast_hu)


def skull_glow(hu: np.ndarray, rng: np.random.Generator, bone: np.ndarray) -> np.ndarray:
    """Beam-hardening pseudo-enhancement: brain next to the inner table reads 1–6 HU brighter, e-folding 4–12 mm.

    ``bone``: where the input was clipped at the top of the normalisation window; channels with little of it are
    left as they are.
    """
    out = hu.copy()
    amp, lam = np.float32(rng.uniform(1.0, 6.0)), rng.uniform(4.0, 12.0)
    tissue = (hu > -5) & (hu < 60)
    for c in range(hu.shape[0]):
        if bone[c].sum() > 50:
            out[c] += amp * np.exp(-ndimage.distance_transform_edt(~bone[c]) / lam).astype(np.float32) * tissue[c]
    return out


def point_spread(hu: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """The scanner's in-plane point spread: a Gaussian blur, a sharpening (bone-ish kernel), or neither.

    Blur in 60 % of calls (× ``strength``): sigma 0.5-1.6 px (the nets' grid is 1 mm) drawn per axis, since a
    soft kernel (point-spread FWHM 1-1.5 mm) and a thick or tilted slice through a sloping wall spread an edge
    unevenly. The ventricle wall then fades into white matter over 1-3 mm, the partial-volume band that is not a
    periventricular lesion (wml-ncct 1.5.0 read it as one: ``training/preregistered/2026-12-03-wml.md``).
    Sharpening in 10 %: unsharp mask, sigma 0.4-1.2 px, gain 0.3-0.8.
    """
    u = rng.random()
    if u < 0.6 * strength:
        return ndimage.gaussian_filter(hu, (0, *rng.uniform(0.5, 1.6, 2)))
    if u < 0.7 * strength:
        bl = ndimage.gaussian_filter(hu, (0, *(rng.uniform(0.4, 1.2),) * 2))
        return hu + np.float32(rng.uniform(0.3, 0.8)) * (hu - bl)
    return hu


def kernel_blur(hu: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """The recipe of wml-ncct 1.5.0 and earlier: in 35 % of calls (× ``strength``) an isotropic blur (70 %) or a
    sharpening (30 %), sigma 0.4-1.2 px, gain 0.3-0.8 (soft kernel, thick slice profile; bone-ish kernel)."""
    if rng.random() < 0.35 * strength:
        s = rng.uniform(0.4, 1.2)
        bl = ndimage.gaussian_filter(hu, (0, s, s))
        return bl if rng.random() < 0.7 else hu + rng.uniform(0.3, 0.8) * (hu - bl)
    return hu


def randomise_ct(a: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
                 lesion: np.ndarray | None = None, contrast_hu: float | None = None,
                 wide_point_spread: bool = False, min_contrast_hu: float | None = None,
                 low_contrast: float = 0.0, wm_map: np.ndarray | None = None,
                 dense_lesions: float = 0.0, csf_rim: bool = True) -> np.ndarray:
    """Re-render one normalised (C, h, w) NCCT crop with a random scanner; returns a new array.

    ``lesion`` (C, h, w): the lesion fraction of each channel's slice; when given, the lesion contrast is
    changed by −1.5 … +3 HU per unit fraction (fainter or more conspicuous than the generator drew it), but
    never below ``min_contrast_hu`` where the case's contrast is known (see ``lesion_contrast_floor``).
    ``contrast_hu``: the generator's full lesion contrast for this case, the scale of the unlabelled sub-threshold
    darkening (``subthreshold_hypodensity``); None (unknown): that darkening is not drawn.
    ``wide_point_spread``: ``point_spread`` (the wml-ncct 1.6.0 experiment, not shipped) instead of
    ``kernel_blur`` (the active model's recipe).
    ``low_contrast``: the probability of ``low_contrast_head`` where the contrast is known (0: the 1.12.0 recipe);
    ``wm_map``: the crop's white-matter fraction, which places its white-matter level there.
    ``dense_lesions``: the probability that a contrast change darkens the lesion by another 3-8 HU (contrasts up to
    about 20 HU: the development set's dense cores, which 1.12.0 reads as CSF; ``training.gap_probe``).
    ``csf_rim``: passed to ``normal_variation`` (False: no unlabelled darkening along the CSF boundaries).
    """
    if strength <= 0:
        return a
    hu = _hu(a.astype(np.float32))
    bone = a >= HU_CLIP[1] - 1e-3  # before the HU map moves the clipped level
    contrast = contrast_hu
    if lesion is not None and rng.random() < 0.5:
        delta = float(rng.uniform(-1.5, 3.0))
        if dense_lesions and rng.random() < dense_lesions:  # no draw at 0: old recipes replay
            delta += float(rng.uniform(3.0, 8.0))
        if min_contrast_hu is not None and contrast is not None:
            delta = max(delta, min_contrast_hu - contrast)
        hu -= lesion.astype(np.float32) * np.float32(delta)
        contrast = None if contrast is None else contrast + delta
    if low_contrast and contrast is not None and rng.random() < low_contrast:  # no draw at 0: old recipes replay
        hu = low_contrast_head(hu, rng, contrast, crop_white_matter_level(hu, wm_map, lesion))
    if contrast is not None and rng.random() < 0.4 * strength:
        hu = subthreshold_hypodensity(hu, rng, lesion, max(float(contrast), 0.0))
    hu = monotone_hu_map(rng)(hu).astype(np.float32)
    if rng.random() < 0.4 * strength:
        hu = skull_glow(hu, rng, bone)
    C, h, w = hu.shape
    hu = (point_spread if wide_point_spread else kernel_blur)(hu, rng, strength)
    if rng.random() < 0.25 * strength:  # in-plane resolution loss: down- and up-sample
        f = rng.uniform(1.2, 2.0)
        lo = ndimage.zoom(hu, (1, 1 / f, 1 / f), order=1)
        hu = ndimage.zoom(lo, (1, h / lo.shape[1], w / lo.shape[2]), order=1)[:, :h, :w]
        if hu.shape != (C, h, w):
            hu = np.pad(hu, ((0, 0), (0, h - hu.shape[1]), (0, w - hu.shape[2])), mode="edge")
    if rng.random() < 0.5 * strength:  # cupping / beam-hardening bias, ±1–5 HU
        hu += smooth_field(rng, (h, w), rng.uniform(1, 5))[None]
    if rng.random() < 0.15 * strength:  # streaks, 5–25 HU
        hu += streaks(rng, (h, w), rng.uniform(5, 25))[None]
    hu = normal_variation(hu, rng, strength, csf_rim)
    if rng.random() < 0.7 * strength:  # extra quantum noise, 0.5–3 HU (thin slices, low dose: 3–7 HU), random texture
        outside = a <= HU_CLIP[0] + 1e-3  # air stays air: scanners reconstruct it at -1000 HU, far below the clip
        sd = rng.uniform(3.0, 7.0) if rng.random() < 0.2 else rng.uniform(0.5, 3.0)
        hu += noise_field(rng, hu.shape, sd * strength)
        hu[outside] = _hu(HU_CLIP[0])
    if C > 1 and rng.random() < 0.15 * strength:  # patient motion between slices: shift the neighbours
        for c in range(C):
            if c != C // 2:
                hu[c] = ndimage.shift(hu[c], rng.normal(0, 1.2, 2), order=1, mode="nearest")
    return _norm(hu).astype(np.float32)


def randomise_swi(x: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Re-render a batch of normalised SWI patches (n, ch, s, s, s): contrast gamma, bias, noise, blur."""
    if strength <= 0:
        return x
    out = np.empty_like(x, dtype=np.float32)
    for i in range(len(x)):
        p = np.clip(x[i].astype(np.float32), 0, None)
        p = p ** np.float32(rng.uniform(0.7, 1.4))  # vein / tissue contrast (field strength, TE, filtering)
        if rng.random() < 0.5:  # smooth bias across the patch
            s = p.shape[-1]
            g = np.linspace(-1, 1, s, dtype=np.float32)
            c = rng.normal(0, 0.12, 3).astype(np.float32)
            p *= 1 + c[0] * g[:, None, None] + c[1] * g[None, :, None] + c[2] * g[None, None, :]
        if rng.random() < 0.3:  # blur (lower resolution, 1.5 T)
            p = ndimage.gaussian_filter(p, (0, *(rng.uniform(0.3, 0.9),) * 3))
        if rng.random() < 0.6:  # extra noise, 1–8 % of tissue level
            p = np.abs(p + rng.normal(0, rng.uniform(0.01, 0.08) * strength, p.shape).astype(np.float32))
        out[i] = p * np.float32(rng.uniform(0.85, 1.15))
    return np.clip(out, 0.0, 3.0)
