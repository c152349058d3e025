"""Site validation of a model version against a site's own labelled cases (``svdmark models validate``).

    from svdmark.validation import validate
    report = validate(Lifecycle(config), "wml-ncct", "1.2.0", Path("/site/reference"), Path("out/"))

Modules, in the order they run:

* ``references`` — reads the site's references (DICOM SEG, ``points.csv``/``points.json``,
  ``reference.csv``) from the reference folder;
* ``cases`` — runs the version under validation on each referenced series through the
  service's own stages and compares it with its reference (one ``Case`` per series);
* ``agreement`` — Bland–Altman, ICC(2,1), Pearson r, MAE by volume bin, Dice, microbleed
  matching, burden-grade kappa, interval coverage;
* ``criteria`` — acceptance criteria (manifest or defaults) and the verdict;
* ``report`` — ``report.json``, ``report.html`` and the PNG plots.

Each validation is audited in the journal (``model.validate``) through ``Lifecycle``; that record is
what ``svdmark models activate --require-validation`` looks for.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..domain import iso_utc
from ..errors import SvdmarkError

__all__ = ["validate", "default_output_dir"]


def default_output_dir(data_dir: Path, name: str, version: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime())
    return Path(data_dir) / "validations" / f"{name}-{version}-{stamp}"


def validate(lifecycle, name: str, version: str, reference_dir: Path, output_dir: Path | None = None,
             say: Callable[[str], None] = lambda s: None) -> dict:
    """Validate ``name version`` on ``reference_dir``; write the report, audit it, return its figures. A run that
    ends without a verdict (no usable reference, a malformed criterion) is audited as ``model.validate_error``."""
    t0 = time.perf_counter()
    reference_dir = Path(reference_dir).resolve()
    if not reference_dir.is_dir():
        raise SvdmarkError(f"no such reference folder: {reference_dir}")
    spec = lifecycle.spec(name, version)  # manifest read, sha256 verified
    try:
        return _validate(lifecycle, spec, reference_dir, output_dir, say, t0)
    except SvdmarkError as exc:  # a run that ends without a verdict is audited too, with why
        lifecycle.audit_refusal("model.validate_error", spec, str(exc), reference_dir=str(reference_dir))
        raise


def _validate(lifecycle, spec, reference_dir: Path, output_dir: Path | None, say, t0: float) -> dict:
    from .. import __version__
    from ..infer.registry import manifest_digest
    from ..lifecycle import actor
    from . import agreement, cases, criteria, report

    name, version = spec.name, spec.version
    task = spec.task.value
    wanted = criteria.resolve(task, spec.manifest)  # a bad manifest section fails before the long run
    out_dir = Path(output_dir) if output_dir else default_output_dir(lifecycle.config.data_dir, name, version)
    out_dir = out_dir.resolve()
    if (out_dir / "report.html").exists() or (out_dir / "report.json").exists():
        raise SvdmarkError(f"{out_dir} already holds a validation report; give another --output (each validation "
                           "keeps its own report, which its audit entry names)")
    if out_dir.exists() and not out_dir.is_dir():
        raise SvdmarkError(f"--output {out_dir} is a file, not a folder")
    found, inventory = cases.run(lifecycle.config, spec, lifecycle.runtime, reference_dir, [out_dir], say)
    if not found:
        problems = "".join(f"\n  {p['file']}: {p['reason']}" for p in inventory.reference_problems)
        raise SvdmarkError(
            f"no case to validate on under {reference_dir}: {inventory.series} image series,"
            f" {inventory.for_task} routed to the {task} task, none with a reference"
            f" ({len(inventory.reference_without_images)} reference(s) whose images were not found). Give the"
            " DICOM images with a SEG per series, points.csv/points.json, or reference.csv (series_uid,"
            f" {'wml_ml' if task == 'wml' else 'cmb_count'})."
            + (f"\nReference files not used:{problems}" if problems else ""))
    figures = agreement.figures(task, found)
    passed, judged = criteria.evaluate(wanted, figures)
    body = {
        "model": name, "version": version, "task": task, "sha256": spec.sha256,
        "reference_dir": str(reference_dir), "output_dir": str(out_dir), "passed": passed,
        "verdict": "pass" if passed else "fail", "criteria": judged,
        "criteria_source": "manifest" if any(c["source"] == "manifest" for c in judged) else "default",
        "figures": figures, "inventory": inventory.as_dict(), "actor": actor(), "svdmark": __version__,
        "finished_at": iso_utc(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    written = report.write(out_dir, body, [c.as_dict() for c in found])
    lifecycle.record_validation({
        "name": name, "version": version, "sha256": spec.sha256, "manifest_sha256": manifest_digest(spec),
        "task": task,
        "reference_dir": str(reference_dir), "n_cases": figures["counts"]["cases"],
        "n_included": figures["counts"]["included"], "n_withheld": figures["counts"]["withheld"],
        "n_failed": figures["counts"]["failed"], "verdict": body["verdict"], "passed": passed,
        "report": written["files"]["html"], "finished_at": body["finished_at"],
    })
    return written
