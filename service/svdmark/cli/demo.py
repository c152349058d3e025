"""`svdmark demo`: the whole path on this machine, with nothing to configure.

Starts the listener on a free localhost port, generates a small synthetic NCCT
and SWI study (with distractor series), sends them over DICOM, waits for the
results at a built-in destination (DEMOPACS) and prints what came back.
Exits 0 only when every series was analysed or ignored and all six result objects
(an SR, a SEG and a summary image for each of the two target series) arrived; 2 when the
study generator (``svdmark_phantom``, shipped in the same wheel) is not installed.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from .. import logs
from ..config import Config, Destination
from ..domain import DeliveryState, SeriesState
from ..errors import ConfigError
from .common import add_json_option, add_log_level_option, fail

OBJECTS_PER_TARGET = 3  # SR, SEG, summary image
NO_GENERATOR = ("the demo's study generator svdmark_phantom is not installed: pip install 'svdmark[phantom]' "
                "(it ships in the svdmark wheel)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a self-contained demonstration", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary folder)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the results")
    add_log_level_option(p, default="WARNING")
    add_json_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    with tempfile.TemporaryDirectory(prefix="svdmark-demo-") as tmp:
        work = args.workdir or Path(tmp)
        return _demo(work, args)


def _demo(work: Path, args: argparse.Namespace) -> int:
    try:  # test data, not part of the service: imported here only
        from svdmark_phantom import write_study
    except ImportError:
        return fail(args, NO_GENERATOR, exit_code=2)
    from ..export import CStoreExporter
    from ..receive.sink import FolderSink
    from ..service import Service
    from .serve import active_models

    cfg = Config(host="127.0.0.1", port=0, data_dir=work / "svdmark-data", settle_seconds=1.0,
                 allow_calling_ae=("DEMOSCU",))
    found, missing = active_models(cfg)
    if not found:
        raise ConfigError("no model is active, so the demo cannot analyse anything: " + "; ".join(missing.values()))
    sink = FolderSink(work / "pacs", ae_title="DEMOPACS")
    cfg = cfg.with_overrides(destinations=(Destination("DEMOPACS", "127.0.0.1", sink.port),)).validate()
    service = Service(cfg).start()
    try:
        studies = [write_study(work / "studies" / "ncct", seed=11, kind="ncct", vendor="siemens", distractors=True),
                   write_study(work / "studies" / "swi", seed=12, kind="swi", vendor="ge", distractors=True,
                               n_slices=48, slice_thickness=2.0)]  # 96 mm: whole-brain coverage, as the gate needs
        files = sorted(p for p in (work / "studies").rglob("*.dcm"))
        say = (lambda *_: None) if args.json else print
        say(f"svdmark demo: sending {len(files)} instances of 2 synthetic studies to SVDMARK@127.0.0.1:{service.port}")
        outcomes = CStoreExporter("DEMOSCU").send(Destination(cfg.ae_title, "127.0.0.1", service.port), files)
        failed = [o for o in outcomes if not o.ok]
        if failed:
            return fail(args, f"{len(failed)} instance(s) were refused, first: {failed[0].path}: {failed[0].detail}")
        jobs = _wait(service, args.timeout)
        received = sink.files()
        report = _report(jobs, received, studies)
        expected = OBJECTS_PER_TARGET * sum(1 for st in studies for s in st.series if s.target)
        ok = all(j["state"] in ("done", "ignored") for j in jobs) and report["objects_received"] == expected
        report.update(objects_expected=expected, ok=ok)
        if args.json:
            print(json.dumps(report, indent=2, default=str))
        else:
            _print(report)
            if not ok:
                print(f"\nsvdmark demo: FAILED: {report['objects_received']} of {expected} result objects arrived"
                      f" at DEMOPACS; {sum(j['state'] not in ('done', 'ignored') for j in jobs)} series not analysed")
        return 0 if ok else 1
    finally:
        service.stop()
        sink.stop()


def _wait(service, timeout: float) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        counts = service.journal.counts()
        busy = sum(counts["series"].get(s.value, 0) for s in (SeriesState.RECEIVING, SeriesState.QUEUED))
        undelivered = sum(counts["deliveries"].get(s.value, 0) for s in (DeliveryState.PENDING, DeliveryState.SENDING))
        if counts["jobs"] and not busy and not undelivered:
            break
        time.sleep(0.5)
    return [dict(r) for r in service.journal.jobs()]


def _report(jobs: list[dict], received: list[Path], studies) -> dict:
    import pydicom

    objects = []
    for path in received:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        objects.append({"modality": ds.Modality, "sop_class": ds.SOPClassUID.name,
                        "series_description": str(ds.get("SeriesDescription", ""))})
    return {
        "jobs": [{"series_uid": j["series_uid"], "state": j["state"], "routing": j["routing"], "detail": j["detail"],
                  "summary": json.loads(j["summary"]) if j["summary"] else None} for j in jobs],
        "objects_received": len(objects),
        "objects": objects,
        "truth": [s.to_dict() for s in studies],
    }


def _withheld_text(s: dict) -> str:
    reasons = "; ".join(s.get("quality_reasons") or [])
    return "not reliably measurable" + (f" ({reasons})" if reasons else "")


def _interval_text(s: dict, key: str, fmt: str, unit: str = "") -> str:
    low, high = s.get(f"{key}_low"), s.get(f"{key}_high")
    if low is None or high is None:
        return ""
    text = f" (uncertainty interval {low:{fmt}} to {high:{fmt}}{unit}"
    return text + (", category uncertain)" if s.get("category_uncertain") else ")")


def job_lines(j: dict) -> list[str]:
    """The demo's lines for one job: the measurement with its interval, or why none is given."""
    s = j.get("summary") or {}
    model = f"(model {s.get('model_name')} {s.get('model_version')})"
    if j["state"] == "done" and s.get("task") == "wml":
        if s.get("measurable") is False or s.get("wml_ml") is None:
            lines = [f"  NCCT {j['series_uid']}: WML volume {_withheld_text(s)} {model}"]
        else:
            lines = [f"  NCCT {j['series_uid']}: WML volume {s['wml_ml']:.2f} mL"
                     f"{_interval_text(s, 'wml_ml', '.2f', ' mL')} {model}"]
    elif j["state"] == "done" and s.get("task") == "cmb":
        if s.get("measurable") is False or s.get("cmb_count") is None:
            lines = [f"  SWI  {j['series_uid']}: microbleed count {_withheld_text(s)} {model}"]
        else:
            lines = [f"  SWI  {j['series_uid']}: {s['cmb_count']} microbleed(s)"
                     f"{_interval_text(s, 'cmb_count', '.0f')}, burden grade {s['cmb_grade']} {model}"]
    else:
        return [f"  {j['state']:<8} {j['series_uid']}: {j['detail']}"]
    lines += [f"      flag {f['rule_id']}: {f['category']}" for f in s.get("flags", [])]
    return lines


def _print(report: dict) -> None:
    print("\nAnalysed series:")
    for j in report["jobs"]:
        for line in job_lines(j):
            print(line)
    print(f"\nObjects received at DEMOPACS: {report['objects_received']} of {report['objects_expected']}")
    for o in report["objects"]:
        print(f"  {o['modality']:<3} {o['sop_class']}  '{o['series_description']}'")
    print("\nGround truth of the synthetic studies:")
    for t in report["truth"]:
        print("  " + json.dumps({k: v for k, v in t.items() if k in ("kind", "vendor", "truth_wml_ml", "cmb_count", "grade")}))
    print("\nResearch use only: svdmark describes measurements; it never recommends a treatment.")
