"""Self-test of a model on the built-in phantom named in its manifest.

``manifest["self_test"]`` = {"generator": "make_ncct" | "make_swi", "kwargs": {...},
"expect": {"volume_ml": [lo, hi]} or {"count": [lo, hi]}}.
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

    from .. import measure, phantom

    spec = model.manifest.get("self_test")
    if not spec:
        raise ModelError(f"{model.label}: manifest has no self_test section")
    gen = getattr(phantom, spec["generator"])
    ph = gen(**spec["kwargs"])
    vol = phantom_volume(ph)
    t0 = time.perf_counter()
    out = runtime.run(model, vol)
    findings = measure.from_output(model, vol, out)
    secs = time.perf_counter() - t0
    if "volume_ml" in spec["expect"]:
        lo, hi = spec["expect"]["volume_ml"]
        val, qty, truth = findings.volume_ml, "WML volume mL", float(ph.truth_wml_ml)
    else:
        lo, hi = spec["expect"]["count"]
        val, qty, truth = float(findings.count), "microbleed count", float(len(ph.microbleeds))
    return SelfTestResult(model.label, bool(lo <= val <= hi), float(val), (float(lo), float(hi)), qty, truth,
                          secs, out.provider)
