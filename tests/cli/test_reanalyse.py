"""`svdmark jobs reanalyse`: after a model change, the operator queues new analyses of the series the
old version measured; refusals are one line each and the exit code says whether every series was queued."""
from __future__ import annotations

import json

from svdmark.domain import JobState
from svdmark.journal import Journal
from tests import journaldb
from tests.cli.conftest import run_cli
from tests.unit.test_journal import record


def _analysed(data_dir, series: str, version: str) -> None:
    j = Journal(journaldb.url_for(data_dir))
    record(j, f"{series}.1", series=series)
    j.queue_job(j.series_row(series), "test")
    j.finish_job(j.claim_job(), JobState.DONE, model=("wml-ncct", version, "sha"))
    j.close()


def test_reanalyse_by_model_version_then_refused_while_queued(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _analysed(data, "1.2.3", "1.2.0")
    _analysed(data, "1.2.4", "1.3.0")
    r = run_cli("jobs", "reanalyse", "--analysed-with", "wml-ncct:1.2.0", "--data-dir", data, "--json", check_rc=0)
    (row,) = json.loads(r.stdout)
    assert row["series_uid"] == "1.2.3" and row["queued"] and isinstance(row["job_id"], int)

    r = run_cli("jobs", "reanalyse", "1.2.3", "1.2.4", "--data-dir", data, check_rc=1)
    assert r.stdout.splitlines() == ["series 1.2.3: not queued: its analysis is already queued or running",
                                     f"series 1.2.4: job {row['job_id'] + 1} queued"]
    r = run_cli("jobs", "reanalyse", "--analysed-with", "cmb-swi", "--data-dir", data, check_rc=1)
    assert "no series matched" in r.stderr
    pending = [j for j in Journal(journaldb.url_for(data)).job_records(JobState.PENDING)]
    assert sorted((j.series_uid, j.generation) for j in pending) == [("1.2.3", 2), ("1.2.4", 2)]
