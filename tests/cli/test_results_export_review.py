"""`svdmark results export` around re-analysis: a queued re-analysis, or one a newer one replaced before it ran,
does not hide the analysed result the PACS holds (found by a review)."""
import pytest

import pandas as pd
import pydicom
from pydicom.data import get_testdata_file

from svdmark.cli.main import main
from svdmark.domain import JobState
from svdmark.geometry import SliceGeometry
from svdmark.journal import Journal

SERIES = "1.2.3.4.5"


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("SVDMARK_PSEUDONYM_KEY", "k")


def _inst(j, tmp, n, t):
    p = tmp / f"i{n}.dcm"
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SeriesInstanceUID = SERIES
    ds.save_as(p)
    return j.record_instance(sop_uid=f"1.2.3.4.5.{n}", study_uid="1.2.3", series_uid=SERIES,
                             sop_class="1.2.840.10008.5.1.4.1.1.2", transfer_syntax="1.2.840.10008.1.2.1",
                             path=p, size=p.stat().st_size, digest=f"d{n}", modality="CT",
                             geometry=SliceGeometry(), calling_ae="CT01")


def _export(data):
    out = data.parent / "out.csv"
    assert main(["results", "export", "--data-dir", str(data), "--output", str(out)]) == 0
    return pd.read_csv(out, dtype=str)


def test_queued_reanalysis_or_superseded_job_hides_the_delivered_result(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    j = Journal(f"sqlite:///{data / 'journal.sqlite'}")
    _inst(j, tmp_path, 1, 1000.0)
    jid = j.enqueue_series(SERIES, "test")
    job = j.claim_job()
    assert job.id == jid
    j.finish_job(job, JobState.DONE, routing="wml", rule_id="ct-head-noncontrast", detail="wml: head NCCT",
                 model=("wml-ncct", "1.0", "sha"))
    df = _export(data)
    assert list(df.status) == ["analysed"]

    # a late instance: generation 2, its job queued (not yet analysed)
    _inst(j, tmp_path, 2, 3000.0)
    j.enqueue_series(SERIES, "test")
    df = _export(data)
    # the table promises "the latest analysis of each" series; a queued job is no analysis
    assert list(df.status) == ["analysed"], df[["status", "job_id", "generation"]].to_dict("records")


def test_superseded_pending_job_replaces_the_analysed_row(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    j = Journal(f"sqlite:///{data / 'journal.sqlite'}")
    _inst(j, tmp_path, 1, 0)
    j.enqueue_series(SERIES, "test")
    job = j.claim_job()
    j.finish_job(job, JobState.DONE, routing="wml", rule_id="ct-head-noncontrast", model=("wml-ncct", "1.0", "sha"))
    _inst(j, tmp_path, 2, 0)          # late instance: generation 2
    j.enqueue_series(SERIES, "test")  # its job queued
    _inst(j, tmp_path, 3, 0)          # another late instance: the queued job is superseded, generation 3 receiving
    df = _export(data)
    # without --all, superseded analyses are promised to be left out; the analysed generation-1 row should remain
    assert "superseded" not in set(df.status), df[["status", "job_id", "generation"]].to_dict("records")
    assert list(df.status) == ["analysed"]
