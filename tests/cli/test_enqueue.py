"""`svdmark analyze --enqueue`: an archive queued on the shared journal, analysed by a separate worker process,
the tables from the journal; repeating it queues nothing new, and a run cut short is finished by the next."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from svdmark.domain import JobState, SeriesState
from svdmark.journal import Journal
from svdmark.receive.inspect import inspect
from svdmark.receive.store import keep
from svdmark.spool import Spool

from .conftest import Svdmark, run_cli, wait_until

FINISHED = {JobState.DONE, JobState.IGNORED, JobState.FAILED}


def _zipped(study, where: Path) -> Path:
    """The study as a zip file (its members are copied into the spool; plain files may be hard-linked)."""
    with zipfile.ZipFile(where, "w") as zf:
        for f in sorted(Path(study.out_dir).rglob("*.dcm")):
            zf.write(f, f.relative_to(study.out_dir))
    return where


def _enqueue(url: str, spool: Path, out: Path, paths, env: dict, check_rc: int = 0) -> dict:
    r = run_cli("analyze", *paths, "--enqueue", "--journal", url, "--spool", spool, "--output", out,
                "--data-dir", out.parent / "nodata", "--json", env=env, check_rc=check_rc)
    return json.loads(r.stdout)


def test_enqueued_archive_is_analysed_by_a_worker_and_tabled_from_the_journal(tmp_path, studies, fake_models,
                                                                             postgres_url):
    env = {"SVDMARK_MODELS_DIR": str(fake_models), "SVDMARK_PSEUDONYM_KEY": "test-key"}
    inputs = [Path(studies["ncct"].out_dir), _zipped(studies["swi"], tmp_path / "swi.zip")]
    spool, out = tmp_path / "spool", tmp_path / "out"
    every = {s.series_uid: s for st in (studies["ncct"], studies["swi"]) for s in st.series}
    targets = {uid for uid, s in every.items() if s.target}
    n_files = sum(1 for st in (studies["ncct"], studies["swi"]) for _ in Path(st.out_dir).rglob("*.dcm"))

    doc = _enqueue(postgres_url, spool, out, inputs, env)
    assert doc["complete"] and doc["counts"]["series"] == len(every) == doc["counts"]["queued"]
    assert doc["counts"]["instances_new"] == n_files and doc["counts"]["present"] == 0
    assert "postgresql://" in doc["journal"] and len(doc["jobs"]) == len(every)

    journal = Journal(postgres_url, owner="test-reader")
    try:
        jobs = journal.job_records()
        assert sorted(j.series_uid for j in jobs) == sorted(every) and {j.state for j in jobs} == {JobState.PENDING}
        assert all(j.completion.startswith("batch: ") for j in jobs)
        assert {s.state for s in journal.all_series()} == {SeriesState.QUEUED}
        # every instance in the shared spool under its UIDs; the folder's files hard-linked, the zip's copied
        ncct_target = next(s for s in studies["ncct"].series if s.target)
        for inst in journal.instances(ncct_target.series_uid):
            assert spool.resolve() in Path(inst.path).parents
            original = next(f for f in Path(studies["ncct"].out_dir, ncct_target.folder).glob("*.dcm")
                            if str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) == inst.sop_uid)
            assert os.path.samefile(inst.path, original)
        swi_target = next(s for s in studies["swi"].series if s.target)
        assert all(Path(i.path).stat().st_nlink == 1 for i in journal.instances(swi_target.series_uid))

        # one worker process, no listener, no assembler: it claims the queued jobs and analyses them
        worker = Svdmark(tmp_path / "worker", [], extra=("--journal", postgres_url, "--spool", str(spool)),
                         roles=("work",), env=env).start()
        try:
            wait_until(lambda: {j.state for j in journal.job_records()} <= FINISHED, 120, "the jobs finished")
        finally:
            worker.stop()
        finished = {j.series_uid: j for j in journal.job_records()}
        assert {uid for uid, j in finished.items() if j.state == JobState.DONE} == targets, worker.log_text()[-3000:]
        assert {j.state for uid, j in finished.items() if uid not in targets} == {JobState.IGNORED}
    finally:
        journal.close()

    # the tables come from the journal: one analysed row per target series, with its measurement
    table = out / "results.csv"
    run_cli("results", "export", "--journal", postgres_url, "--output", table, "--data-dir", tmp_path / "nodata",
            env=env, check_rc=0)
    rows = pd.read_csv(table, dtype=str)
    assert rows["series_uid"].is_unique and set(rows["series_uid"]) == set(every)
    analysed = rows[rows["status"] == "analysed"].set_index("series_uid")
    assert set(analysed.index) == targets
    wml = analysed.loc[next(s.series_uid for s in studies["ncct"].series if s.target)]
    cmb = analysed.loc[next(s.series_uid for s in studies["swi"].series if s.target)]
    assert float(wml["wml_ml"]) >= 0 and pd.isna(wml["cmb_count"])
    assert int(cmb["cmb_count"]) >= 0 and 0 <= int(cmb["cmb_grade"]) <= 3 and pd.isna(cmb["wml_ml"])
    assert all(Path(analysed.loc[uid, "sr_file"]).is_file() for uid in targets)  # the worker's SR, in the spool

    # the same pipeline as in-process `svdmark analyze`: the same numbers and the same SR (deterministic UIDs)
    run_cli("analyze", *inputs, "--output", tmp_path / "here", "--data-dir", tmp_path / "nodata", env=env,
            check_rc=0)
    here = pd.read_csv(tmp_path / "here" / "results.csv", dtype=str).set_index("series_uid").loc[sorted(targets)]
    cols = ["wml_ml", "cmb_count", "cmb_grade", "sr_sop_uid", "patient_pseudonym", "model_sha256"]
    pd.testing.assert_frame_equal(analysed.loc[sorted(targets), cols], here[cols])

    # the same command again: nothing recorded twice, nothing queued again
    again = _enqueue(postgres_url, spool, out, inputs, env)
    assert again["counts"]["queued"] == 0 and again["counts"]["present"] == len(every)
    assert again["counts"]["instances_duplicate"] == n_files and again["counts"]["instances_new"] == 0
    journal = Journal(postgres_url, owner="test-reader")
    try:
        assert len(journal.job_records()) == len(every)
    finally:
        journal.close()


def test_a_run_cut_short_is_finished_by_the_next(tmp_path, studies, journal_url):
    """A series left ``receiving`` with part of its instances (as Ctrl-C leaves it) is completed and queued once;
    on either engine."""
    env = {"SVDMARK_PSEUDONYM_KEY": "test-key"}
    ncct = Path(studies["ncct"].out_dir)
    target = next(s for s in studies["ncct"].series if s.target)
    files = sorted((ncct / target.folder).glob("*.dcm"))
    spool, out = tmp_path / "spool", tmp_path / "out"
    journal = Journal(journal_url, owner="test")
    try:
        for f in files[:2]:  # what the interrupted run had recorded
            data = f.read_bytes()
            item = inspect(data)
            assert keep(journal, Spool(spool.resolve()), item, data, transfer_syntax=item.transfer_syntax,
                        calling_ae=None) == "new"
        assert journal.series_row(target.series_uid).state == SeriesState.RECEIVING

        doc = _enqueue(journal_url, spool, out, [ncct], env)
        assert doc["counts"]["instances_duplicate"] == 2
        assert doc["counts"]["queued"] == doc["counts"]["series"] == len(studies["ncct"].series)
        (job,) = [j for j in journal.job_records() if j.series_uid == target.series_uid]
        assert job.state == JobState.PENDING and journal.instance_count(target.series_uid) == len(files)
        assert journal.enqueue_series(target.series_uid, "again") is None  # queued already: refused
        assert journal.enqueue_series("1.2.3.4", "unknown") is None

        again = _enqueue(journal_url, spool, out, [ncct], env)
        assert again["counts"]["queued"] == 0 and again["counts"]["present"] == len(studies["ncct"].series)
        assert len(journal.job_records()) == len(studies["ncct"].series)
    finally:
        journal.close()


@pytest.mark.embedded_journal  # no journal configured at all: the SQLite default refuses
@pytest.mark.parametrize("extra, message", [
    ((), "--enqueue needs the shared journal"),
    (("--journal", "sqlite:///j.sqlite", "--workers", "2"), "--workers does not apply with --enqueue"),
])
def test_enqueue_usage_errors(tmp_path, studies, extra, message):
    r = run_cli("analyze", studies["ncct"].out_dir, "--enqueue", "--output", tmp_path / "out", *extra,
                "--data-dir", tmp_path / "nodata", cwd=tmp_path, check_rc=2)
    assert message in r.stderr
    assert not (tmp_path / "j.sqlite").exists()
