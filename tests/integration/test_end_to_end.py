"""dcmtk storescu → `svdmark serve` → dcmtk storescp, with generated studies and distractors."""
from __future__ import annotations

import json

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import JPEGLosslessSV1, RLELossless

from svdmark_phantom import write_study

from tests.peers import Svdmark, results_by_kind, send_studies, source_series_of, storescu, wait_until

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def expect_results(pacs, studies, timeout=240):
    """Wait for SR+SEG+SC of every target series; return them grouped by modality."""
    targets = {t.series_uid for s in studies for t in s.targets}

    def ready():
        got = results_by_kind(pacs)
        done = {u for ds in got["SR"] for u in source_series_of(ds)} & targets
        return got if done == targets and len(got["SEG"]) >= len(targets) and len(got["OT"]) >= len(targets) else None

    return wait_until(ready, timeout, f"results for {len(targets)} target series")


def test_ncct_and_swi_studies_produce_results_and_distractors_none(tmp_path, pacs):
    ncct = write_study(tmp_path / "in" / "ncct", seed=21, kind="ncct", vendor="siemens", distractors=True,
                       transfer_syntax=JPEGLosslessSV1, tilt_deg=15.0, matrix=96)
    swi = write_study(tmp_path / "in" / "swi", seed=22, kind="swi", vendor="philips", distractors=True, n_slices=40,
                      slice_thickness=2.0, transfer_syntax=RLELossless, matrix=96)
    svd = Svdmark(tmp_path / "data", [f"{pacs.aet}@127.0.0.1:{pacs.port}"]).start()
    try:
        send_studies([ncct, swi], svd.port)
        got = expect_results(pacs, [ncct, swi])
        # exactly one SR, SEG and summary per target; nothing for distractors
        assert len(got["SR"]) == len(got["SEG"]) == len(got["OT"]) == 2, {k: len(v) for k, v in got.items()}
        distractors = {d.series_uid for s in (ncct, swi) for d in s.distractors}
        for ds in got["SR"] + got["SEG"]:
            assert not (source_series_of(ds) & distractors)
        assert len(pacs.receptions()) == len(set(pacs.receptions())) == 6

        def ignored_series():
            jobs = json.loads(svd.cli("jobs", "list", "--json").stdout)
            found = {j["series_uid"]: j["detail"] for j in jobs if j["state"] == "ignored"}
            return found if set(found) >= distractors else None

        ignored = wait_until(ignored_series, 30, "every distractor recorded as ignored")
        assert set(ignored) == distractors
        assert all(reason for reason in ignored.values())
        status = json.loads(svd.cli("status", "--json").stdout)
        assert status["listener"]["up"] and status["listener"]["port"] == svd.port
        assert {m["task"] for m in status["models"] if m["active"]} == {"wml", "cmb"}
        assert status["destinations_reachable"] == {f"{pacs.aet}@127.0.0.1:{pacs.port}": True}
        log = svd.log_text()
        assert "analysis_done" in log
        for study in (ncct, swi):
            src = pydicom.dcmread(next(Path(study.out_dir).rglob("*.dcm")), stop_before_pixels=True)
            for secret in (str(src.PatientName), str(src.PatientID), str(src.get("PatientBirthDate", "")) or "-"):
                assert secret not in log, f"patient identifier {secret!r} leaked into the log"
    finally:
        svd.stop()


def test_late_instance_triggers_reanalysis_that_supersedes(tmp_path, pacs):
    study = write_study(tmp_path / "in", seed=23, kind="ncct", vendor="ge", distractors=False, matrix=96)
    files = sorted(Path(study.out_dir).rglob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    cfg = tmp_path / "svdmark.toml"  # the GE header declares 59 images: a short series is held, here for 5 s
    cfg.write_text("[assemble]\nsettle_seconds = 1.0\nfallback_seconds = 5.0\nincomplete_max_wait_seconds = 5.0\n")
    svd = Svdmark(tmp_path / "data", [f"{pacs.aet}@127.0.0.1:{pacs.port}"], extra=("--config", str(cfg))).start()
    try:
        storescu(files[:-1], svd.port)  # the top slice is held back: analysed as incomplete after the wait
        first = expect_results(pacs, [study])["SR"]
        assert len(first) == 1
        texts = []
        first[0].walk(lambda ds, el: texts.append(str(el.value)) if el.keyword == "TextValue" else None)
        assert any("incomplete series: 58 of 59 images" in t for t in texts), "the first SR must say it is partial"
        storescu(files[-1:], svd.port)
        srs = wait_until(lambda: (lambda got: got if len(got) == 2 else None)(results_by_kind(pacs)["SR"]), 240,
                         "the superseding SR")
        newer = next(ds for ds in srs if ds.SOPInstanceUID != first[0].SOPInstanceUID)
        predecessors = [inst.ReferencedSOPInstanceUID
                        for study_item in newer.PredecessorDocumentsSequence
                        for series_item in study_item.ReferencedSeriesSequence
                        for inst in series_item.ReferencedSOPSequence]
        assert predecessors == [first[0].SOPInstanceUID]
    finally:
        svd.stop()
