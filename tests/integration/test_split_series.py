"""A series with a declared count sent in two associations a few seconds apart is analysed once, on all of it."""
from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest

from svdmark_phantom import write_study

from tests import journaldb
from tests.peers import Svdmark, results_by_kind, source_series_of, storescu, wait_until

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def referenced_instances(sr, series_uid: str) -> set[str]:
    """The instances of ``series_uid`` the SR names as its evidence."""
    return {str(i.ReferencedSOPInstanceUID)
            for item in sr.get("CurrentRequestedProcedureEvidenceSequence", [])
            for s in item.get("ReferencedSeriesSequence", []) if str(s.SeriesInstanceUID) == series_uid
            for i in s.get("ReferencedSOPSequence", [])}


def test_series_in_two_associations_yields_one_sr_on_all_instances(tmp_path, pacs):
    study = write_study(tmp_path / "in", seed=41, kind="ncct", vendor="ge", distractors=False, matrix=96)
    (target,) = study.targets
    files = sorted(Path(study.out_dir).rglob("*.dcm"))
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    assert {int(h.ImagesInAcquisition) for h in headers} == {len(files)}  # the declared count
    half = len(files) // 2
    svd = Svdmark(tmp_path / "data", [f"{pacs.aet}@127.0.0.1:{pacs.port}"]).start()  # settle 1 s, fallback 15 s
    try:
        storescu(files[:half], svd.port)  # a gap-free, released first part: geometrically it looks whole
        time.sleep(5)  # the second association comes 5 s later (the scenario of the report), 5x the settle time
        storescu(files[half:], svd.port)

        def sr_and_done():
            got = results_by_kind(pacs)
            return got if any(target.series_uid in source_series_of(ds) for ds in got["SR"]) else None

        got = wait_until(sr_and_done, 240, "the SR")
        (sr,) = got["SR"]
        assert referenced_instances(sr, target.series_uid) == {str(h.SOPInstanceUID) for h in headers}
        jobs = journaldb.query(tmp_path / "data", "SELECT generation, state, completion, completion_warning FROM jobs")
        assert jobs == [(1, "done", f"declared count reached ({len(files)} images in acquisition)", None)]
        assert "series_incomplete_waiting" not in svd.log_text()
    finally:
        svd.stop()


def sr_texts(item):
    for i in item.get("ContentSequence", []):
        yield str(i.get("TextValue", ""))
        yield from sr_texts(i)


def test_a_part_whose_association_was_aborted_is_analysed_with_the_incomplete_warning(tmp_path, pacs):
    """The sender dies mid-series (storescu --abort: no release) and never resends: the quiet timer does not
    complete the part as if it were the whole; after the longest wait it is analysed, and its SR says so."""
    study = write_study(tmp_path / "in", seed=42, kind="ncct", vendor="philips", distractors=False, matrix=96)
    files = sorted(Path(study.out_dir).rglob("*.dcm"))
    assert "ImagesInAcquisition" not in pydicom.dcmread(files[0], stop_before_pixels=True)  # nothing declared
    part = files[: len(files) // 2]
    cfg = tmp_path / "svdmark.toml"
    cfg.write_text("[assemble]\nsettle_seconds = 1.0\nfallback_seconds = 3.0\nincomplete_max_wait_seconds = 12.0\n")
    svd = Svdmark(tmp_path / "data", [f"{pacs.aet}@127.0.0.1:{pacs.port}"], extra=("--config", str(cfg))).start()
    try:
        storescu(part, svd.port, extra=("--abort",))
        got = wait_until(lambda: (lambda g: g if g["SR"] else None)(results_by_kind(pacs)), 240, "the SR")
        (sr,) = got["SR"]
        warning = (f"incomplete series: {len(part)} images, number expected unknown (the sending association "
                   "ended without a normal release)")
        assert warning in set(sr_texts(sr))
        ((completion, stored),) = journaldb.query(tmp_path / "data", "SELECT completion, completion_warning FROM jobs")
        assert stored == warning and "longest wait for an incomplete series" in completion
        log = svd.log_text()
        assert log.count("series_incomplete_waiting") == 1  # held past the 3 s timer, said once
    finally:
        svd.stop()
