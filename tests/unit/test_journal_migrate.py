"""Journal schema versions: a data dir written by the code before versions existed opens with this code."""
import shutil
import sqlite3
from pathlib import Path

import pytest

from svdmark.domain import DeliveryState, JobState
from svdmark.journal import SCHEMA_VERSION, Journal, JournalVersionError, ShadowResult
from svdmark.summary import ResultSummary

OLD = Path(__file__).resolve().parents[1] / "data" / "journal-v0.sqlite"


def version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


@pytest.fixture
def old_journal(tmp_path) -> Path:
    path = tmp_path / "journal.sqlite"
    shutil.copyfile(OLD, path)
    assert version(path) == 0
    return path


def test_saved_old_journal_opens_migrates_and_resumes(old_journal):
    j = Journal(old_journal)
    assert j.migrated_from == 0 and version(old_journal) == SCHEMA_VERSION
    # everything it held is still there
    assert j.counts()["instances"]["total"] == 6
    assert {r["state"] for r in j.deliveries()} == {"delivered", "dead", "pending"}
    # the job a kill -9 left running is recovered as an interruption, and runs again
    assert j.recover(now=5000.0)["jobs_requeued"] == 1
    job = j.claim_job(now=5001.0)
    assert (job.series_uid, job.interruptions, job.warning) == ("1.2.3.2", 1, None)
    # the new columns work on old rows: the dead letter is resent with its history kept
    dead = j.deliveries(DeliveryState.DEAD)[0]
    assert j.resend_dead() == 1
    row = [r for r in j.deliveries() if r["id"] == dead["id"]][0]
    assert (row["state"], row["attempts"], row["resends"], row["last_error"]) == ("pending", 1, 1, "status 0xA700")
    assert [a["outcome"] for a in j.delivery_attempts(dead["id"])] == ["resend"]
    j.finish_job(job, JobState.FAILED, detail="test")
    j.close()
    # a second open changes nothing
    assert Journal(old_journal).migrated_from == SCHEMA_VERSION


def columns(path: Path, table: str) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
    finally:
        db.close()


def test_fresh_journal_is_at_the_current_version(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    assert j.migrated_from == 0 and version(tmp_path / "j.sqlite") == SCHEMA_VERSION
    assert {"round_start", "resends"} <= columns(tmp_path / "j.sqlite", "deliveries")
    assert {"shadow_name", "shadow_summary", "active_summary"} <= columns(tmp_path / "j.sqlite", "shadow_results")


def test_old_journal_gets_the_shadow_table(old_journal):
    assert columns(old_journal, "shadow_results") == set()
    j = Journal(old_journal)
    assert j.shadow_results() == []
    j.record_shadow(ShadowResult("1.2.3.2", "wml", "wml-ncct", "1.1.0", 10.0, active_summary=ResultSummary.from_json({"wml_ml": 1.0})))
    assert [(r.series_uid, r.active_summary.to_json()) for r in j.shadow_results()] == [("1.2.3.2", {"wml_ml": 1.0})]


def test_shadow_rows_of_the_lazily_created_table_survive(old_journal):
    """Before v5 the first shadow run created the table itself, in a file at version 4."""
    db = sqlite3.connect(old_journal)
    db.execute("CREATE TABLE shadow_results (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER,"
               " series_uid TEXT NOT NULL, task TEXT NOT NULL, active_name TEXT, active_version TEXT, active_sha TEXT,"
               " active_summary TEXT, shadow_name TEXT NOT NULL, shadow_version TEXT NOT NULL, shadow_sha TEXT,"
               " shadow_summary TEXT, error TEXT, created_at REAL NOT NULL)")
    db.execute("INSERT INTO shadow_results (series_uid, task, shadow_name, shadow_version, shadow_summary, created_at)"
               " VALUES ('1.2.3.1', 'wml', 'wml-ncct', '1.1.0', '{\"wml_ml\": 2.0}', 5.0)")
    db.commit()
    db.close()
    j = Journal(old_journal)
    assert j.migrated_from == 0 and version(old_journal) == SCHEMA_VERSION
    (row,) = j.shadow_results()
    assert (row.series_uid, row.shadow_summary.to_json(), row.active_summary) == ("1.2.3.1", {"wml_ml": 2.0}, None)


def test_journal_from_a_newer_svdmark_is_refused_untouched(old_journal):
    db = sqlite3.connect(old_journal)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(JournalVersionError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Journal(old_journal)
    db = sqlite3.connect(old_journal)
    cols = {r[1] for r in db.execute("PRAGMA table_info(deliveries)")}
    db.close()
    assert "round_start" not in cols and version(old_journal) == SCHEMA_VERSION + 1


def test_what_grows_with_the_history_is_looked_up_through_an_index(journal_url, old_journal):
    """Schema 8: each job looks up its series' earlier results, the outbox a note's own results and each assembler
    tick the series still receiving; without the indexes each look-up read every result, or every series, in the
    journal (bench/README.md, bench_scale.py --history)."""
    for url in (journal_url, str(old_journal)):  # a new journal on each engine, and one migrated from version 0
        j = Journal(url)
        sql = ("SELECT indexname FROM pg_indexes WHERE tablename IN ('results', 'series')" if j.path is None else
               "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name IN ('results', 'series')")
        assert {"results_series", "results_job", "series_state"} <= {r[0] for r in j._query(sql)}
        j.close()
