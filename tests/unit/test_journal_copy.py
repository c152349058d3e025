"""`Journal.copy_into` and `svdmark journal copy`: a site's SQLite journal moved to PostgreSQL (the real server),
every row kept, ids continuing, refused while the source is in use or the target holds rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from svdmark.domain import DeliveryState, JobState
from svdmark.journal import COPIED_TABLES, CopyRefused, Journal, ResultObject, ShadowResult
from svdmark.summary import ResultSummary
from tests.cli.conftest import run_cli
from tests.unit.test_journal import GEOM, record

ALL_ROWS = {t: f"SELECT * FROM {t} ORDER BY 1" for t in COPIED_TABLES}


def _site_history(j: Journal, spool: str = "/srv/spool") -> None:
    """Instances, two analyses with results, deliveries in several states with attempts, audit, a shadow run,
    and one job left running by a process that was killed."""
    for n, series in enumerate(("1.2.3", "1.2.4", "1.2.5")):
        j.record_instance(sop_uid=f"{series}.1", study_uid="1.2", series_uid=series,
                          sop_class="1.2.840.10008.5.1.4.1.1.2", transfer_syntax="1.2.840.10008.1.2.1",
                          path=Path(f"{spool}/incoming/1.2/{series}/{series}.1.dcm"), size=10 + n, digest=f"d{n}",
                          modality="CT", geometry=GEOM, calling_ae="CT1", now=100.0 + n)
    for series in ("1.2.3", "1.2.4"):
        j.queue_job(j.series_row(series), "test")
        job = j.claim_job()
        j.finish_job(job, JobState.DONE, summary=ResultSummary.from_json({"task": "wml", "wml_ml": 0.4}),
                     outputs=[ResultObject(f"9.{series}", "sr", "1.2.840.10008.5.1.4.1.1.88.34",
                                           Path(f"{spool}/results/{series}/sr.dcm"))],
                     deliveries=[(f"9.{series}", "PACS@127.0.0.1:104"), (f"9.{series}", "ARCHIVE@10.0.0.2:104")],
                     model=("wml-ncct", "1.3.0", "sha"))
    first = j.due_deliveries()[0]
    j.mark_delivered(first.id)
    j.queue_job(j.series_row("1.2.5"), "test")
    j.claim_job()  # running when its process died
    j.audit("admin", "model.activate", {"name": "wml-ncct", "version": "1.3.0"})
    j.record_shadow(ShadowResult("1.2.3", "wml", "wml-ncct", "1.4.0", 200.0, active_name="wml-ncct",
                                 active_version="1.3.0", active_summary=ResultSummary.from_json({"task": "wml"}),
                                 shadow_summary=ResultSummary.from_json({"task": "wml", "wml_ml": 0.5})))


def _rows(j: Journal, lapse: bool = False) -> dict[str, list[tuple]]:
    """Every row of every copied table; with ``lapse``, each lease_until as a copy writes it (None)."""
    out = {}
    for t, sql in ALL_ROWS.items():
        out[t] = [tuple(None if lapse and c == "lease_until" else v for c, v in zip(r.keys(), r))
                  for r in j._query(sql)]
    return out


def test_sqlite_history_copies_into_postgresql_row_for_row_and_ids_continue(tmp_path, postgres_url):
    source = Journal(tmp_path / "journal.sqlite")
    _site_history(source)
    target = Journal(postgres_url)
    copied = source.copy_into(target, live_within=15.0)
    want = _rows(source)
    assert copied == {t: len(rows) for t, rows in want.items()}
    assert copied["instances"] == 3 and copied["deliveries"] == 4 and copied["shadow_results"] == 1
    assert _rows(target) == _rows(source, lapse=True)  # every row, every column, ids included; leases lapsed
    # the copy works as a journal: the job the dead process held is freed and runs again; new ids follow on
    assert target.recover() and target.claim_job().series_uid == "1.2.5"
    record(target, "7.1", series="7.7")
    target.queue_job(target.series_row("7.7"), "test")
    assert max(r["id"] for r in target._query("SELECT id FROM jobs")) == 4
    assert {d.id for d in target.due_deliveries()} == {d.id for d in source.due_deliveries()}
    target.audit("admin", "journal.copy", {})
    assert target.audit_entries(limit=1)[0].action == "journal.copy"


def test_copy_is_refused_into_a_journal_with_rows_and_from_one_in_use(tmp_path, postgres_url):
    source = Journal(tmp_path / "journal.sqlite")
    _site_history(source)
    target = Journal(postgres_url)
    target.audit("admin", "something", {})
    with pytest.raises(CopyRefused, match="not empty .*1 audit"):
        source.copy_into(target, live_within=15.0)
    assert len(target._query("SELECT * FROM instances")) == 0
    empty = Journal(tmp_path / "empty.sqlite")
    source.heartbeat(("receive",))
    with pytest.raises(CopyRefused, match="in use by 1 process"):
        source.copy_into(empty, live_within=15.0)
    source.leave()
    assert source.copy_into(empty, live_within=15.0)["instances"] == 3  # SQLite to SQLite works too


@pytest.mark.embedded_journal  # the source is the data dir's SQLite journal, as a site's before the move
def test_cli_copies_a_data_dir_journal_with_a_moved_spool(tmp_path, postgres_url):
    data = tmp_path / "data"
    data.mkdir()
    j = Journal(data / "journal.sqlite")
    _site_history(j, spool=str(data / "spool"))
    with j._tx() as db:  # one series' images purged: the header copy its purge kept is a spool path too
        db.execute("UPDATE series SET header_path=? WHERE series_uid='1.2.3'",
                   (f"{data / 'spool'}/headers/1.2/1.2.3/1.2.3.1.dcm",))
    j.close()
    shared = "/mnt/nfs/svdmark-spool"
    r = run_cli("journal", "copy", postgres_url, "--data-dir", data, "--rebase-spool", f"{data / 'spool'}={shared}",
                "--json", check_rc=0)
    out = json.loads(r.stdout)
    assert out["rows"]["instances"] == 3 and out["to"] == postgres_url
    target = Journal(postgres_url)
    assert {str(p) for (p,) in target._query("SELECT path FROM instances")} == {
        f"{shared}/incoming/1.2/{s}/{s}.1.dcm" for s in ("1.2.3", "1.2.4", "1.2.5")}
    assert {str(r.path) for r in target.results()} == {f"{shared}/results/{s}/sr.dcm" for s in ("1.2.3", "1.2.4")}
    assert target.first_instance_path("1.2.3") == Path(f"{shared}/incoming/1.2/1.2.3/1.2.3.1.dcm")
    assert {r["series_uid"]: r["header_path"] for r in target._query("SELECT * FROM series")} == {
        "1.2.3": f"{shared}/headers/1.2/1.2.3/1.2.3.1.dcm", "1.2.4": None, "1.2.5": None}
    assert target.audit_entries(limit=1)[0].action == "journal.copy"
    # a second copy into the same target is refused, and says why, in one line
    r = run_cli("journal", "copy", postgres_url, "--data-dir", data, check_rc=1)
    assert "is not empty" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("journal", "copy", f"sqlite:///{data / 'journal.sqlite'}", "--data-dir", data, check_rc=1)
    assert "the target is the source journal" in r.stderr
    assert [d["state"] for d in target.deliveries()].count(DeliveryState.DELIVERED.value) == 1
