"""Self-test of a model on its reference volumes (beside it or shared: ``infer.reference.locate``), against its
manifest's bounds.

``manifest.self_test`` (a ``SelfTestSpec``; in the JSON ``"self_test"`` = {"reference": "selftest.npz",
"reference_sha256": hex, "expect": {"volume_ml": [lo, hi]} or {"count": [lo, hi]} or {"ratio_to_truth": [lo, hi]},
...}). The reference (``infer.reference``) holds the
volumes and their truth; ``generator`` and ``cases`` record the phantoms it was made from
(``python -m training.selftest_reference``). With ``ratio_to_truth`` (from 1.3.0, three cases) the summed
reading over the summed truth must lie in the window: one case is a noisy probe of a model whose per-case
error is several mL; three keep the window tight enough to reject a model that halves or doubles volumes,
or misses a third of the bleeds. A CMB model must also find its bleeds where they are: the share of the
references' bleeds matched by a finding (``validation.agreement.match_points``, within 5 mm) must reach the
window's lower bound, so a count made up of false findings (a frame error, a model that calls veins) fails too.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..domain import ModelSpec, Task
from ..errors import ModelError
from . import reference


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
    found: int | None = None  # CMB with a ratio window: the references' bleeds a finding matched

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        where = "" if self.found is None else (
            f"; {self.found} of {self.truth:.0f} bleeds found where they are (at least "
            f"{self.expected[0]:g} needed)")
        return (
            f"{self.model}: self-test {verdict}: {self.quantity} {self.measured:.3g} "
            f"(expected {self.expected[0]:g}–{self.expected[1]:g}, phantom truth {self.truth:.3g}{where}; "
            f"{self.seconds:.1f} s on {self.provider})"
        )


def self_test(model: ModelSpec, runtime) -> SelfTestResult:
    import time

    from .. import measure
    from ..validation.agreement import match_points

    spec = model.manifest.self_test
    if spec is None:
        raise ModelError(f"{model.label}: manifest has no self_test section")
    if not spec.reference:
        raise ModelError(f"{model.label}: manifest's self_test names no reference volume (self_test.reference)")
    cases = reference.load(reference.locate(model.path.parent, spec.reference, spec.reference_sha256))
    wml = Task(model.task) is Task.WML
    measured = truth = secs = 0.0
    found: int | None = None if wml else 0
    provider = ""
    for case in cases:
        t0 = time.perf_counter()
        out = runtime.run(model, case.volume)
        findings = measure.from_output(model, case.volume, out)
        secs += time.perf_counter() - t0
        provider = out.provider
        measured += findings.volume_ml if wml else float(findings.count)
        truth += case.truth(model.task)
        if found is not None:
            found = None if case.bleeds_mm is None else found + match_points(
                [b.center_mm for b in findings.microbleeds], case.bleeds_mm).true_positives
    qty = "WML volume mL" if wml else "microbleed count"
    if spec.expect == "ratio_to_truth":  # several cases: the summed reading over the summed truth must lie in the window
        lo, hi = (round(x * truth, 2) for x in spec.bounds)
        if len(cases) > 1:
            qty += f", sum over {len(cases)} phantoms"
    else:
        lo, hi = spec.bounds
        found = None  # a fixed window states no share of the truth
    passed = lo <= measured <= hi and (found is None or found >= lo)
    return SelfTestResult(model.label, bool(passed), float(measured), (float(lo), float(hi)), qty, truth, secs,
                          provider, found)
