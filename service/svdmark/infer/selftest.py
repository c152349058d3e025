"""Self-test of a model on the built-in phantom named in its manifest.

``manifest["self_test"]`` = {"generator": "make_ncct" | "make_swi", "kwargs": {...},
"expect": {"volume_ml": [lo, hi]} or {"count": [lo, hi]}}, or, from 1.3.0, several phantoms
(``"cases": [{...}, ...]``) with ``"expect": {"ratio_to_truth": [lo, hi]}``: the summed reading over the
summed truth must lie in the window. One phantom is a noisy probe of a model whose per-case error is
several mL; three keep the window tight enough to reject a model that halves or doubles volumes, or
misses a third of the bleeds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..domain import FrameRef, ModelSpec, Volume
from ..errors import ModelError


@dataclass(frozen=True)
class SelfTestResult:
    model: str
    passed: bool
    measured: float
    expected: tuple[float, float]
    quantity: str
    truth: float
    seconds: float
    provider: str

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"{self.model}: self-test {verdict}: {self.quantity} {self.measured:.3g} "
            f"(expected {self.expected[0]:g}–{self.expected[1]:g}, phantom truth {self.truth:.3g}; "
            f"{self.seconds:.1f} s on {self.provider})"
        )


def phantom_volume(ph, uid_prefix: str = "2.25.1") -> Volume:
    """A ``Volume`` on the phantom's own grid (what volume.load yields for its DICOM series)."""
    n = ph.image.shape[0]
    frames = tuple(FrameRef(f"{uid_prefix}.{k + 1}", "1.2.840.10008.5.1.4.1.1.2") for k in range(n))
    return Volume(
        array=np.asarray(ph.image, np.float32),
        row_direction=tuple(float(v) for v in ph.row_direction),
        column_direction=tuple(float(v) for v in ph.column_direction),
        pixel_spacing=(float(ph.pixel_spacing[0]), float(ph.pixel_spacing[1])),
        positions=np.asarray(ph.positions, float),
        frames=frames,
        frame_of_reference_uid=f"{uid_prefix}.0",
        slice_thickness=float(getattr(ph, "slice_thickness", 0) or 0) or None,
    )


def self_test(model: ModelSpec, runtime) -> SelfTestResult:
    import time

    import svdmark_phantom as phantom

    from .. import measure

    spec = model.manifest.get("self_test")
    if not spec:
        raise ModelError(f"{model.label}: manifest has no self_test section")
    gen = getattr(phantom, spec["generator"])
    cases = spec.get("cases") or [spec["kwargs"]]
    wml = spec["generator"] == "make_ncct"
    measured = truth = secs = 0.0
    provider = ""
    for kwargs in cases:
        ph = gen(**kwargs)
        vol = phantom_volume(ph)
        t0 = time.perf_counter()
        out = runtime.run(model, vol)
        findings = measure.from_output(model, vol, out)
        secs += time.perf_counter() - t0
        provider = out.provider
        measured += findings.volume_ml if wml else float(findings.count)
        truth += float(ph.truth_wml_ml) if wml else float(len(ph.microbleeds))
    qty = "WML volume mL" if wml else "microbleed count"
    exp = spec["expect"]
    if "ratio_to_truth" in exp:  # several phantoms: the summed reading over the summed truth must lie in the window
        lo, hi = (round(float(x) * truth, 2) for x in exp["ratio_to_truth"])
        if len(cases) > 1:
            qty += f", sum over {len(cases)} phantoms"
    else:
        lo, hi = exp["volume_ml"] if "volume_ml" in exp else exp["count"]
    return SelfTestResult(model.label, bool(lo <= measured <= hi), float(measured), (float(lo), float(hi)), qty,
                          truth, secs, provider)
