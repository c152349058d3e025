"""A late instance re-analyses a series whose results a PACS already holds: the real service sends the new
SR/SEG/summary and then one IHE IOCM rejection note (KOS, "Rejected for Quality Reasons") naming exactly the
first results, to the destination that received them. A destination that was down meanwhile gets only the new
results: the old ones, never sent, are superseded instead of rejected.

dcmtk storescu → `svdmark serve` → two dcmtk storescp destinations.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from svdmark.domain import DeliveryState
from svdmark.encode.rejection import rejected_uids
from svdmark.journal import Journal
from svdmark_phantom import write_study
from tests import journaldb
from tests.peers import DCMTK, StoreSCP, Svdmark, free_port, results_by_kind, storescu, wait_until

pytestmark = [pytest.mark.interop, pytest.mark.slow,
              pytest.mark.skipif(not (DCMTK / "storescp").exists(), reason="dcmtk is not installed")]

KOS = "1.2.840.10008.5.1.4.1.1.88.59"


def _uids(datasets) -> set[str]:
    return {str(ds.SOPInstanceUID) for ds in datasets}


def test_reanalysis_rejects_the_delivered_results_once_and_supersedes_the_unsent(tmp_path):
    study = write_study(tmp_path / "in", seed=31, kind="ncct", vendor="siemens", distractors=False, matrix=96)
    files = sorted(Path(study.out_dir).rglob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    # the stack short of its top slice is analysed after 3 quiet seconds (with an "incomplete" warning);
    # quick retries, and a destination that is down never becomes a dead letter
    config = tmp_path / "svdmark.toml"
    config.write_text("[assemble]\nincomplete_max_wait_seconds = 3\n"
                      "[export]\nmax_attempts = 10000\nbackoff_seconds = 0.5\nbackoff_cap_seconds = 2\n")
    pacs = StoreSCP(tmp_path / "pacs").start()
    late = StoreSCP(tmp_path / "late", aet="LATEPACS", port=free_port())  # not started yet: down
    destinations = [f"{pacs.aet}@127.0.0.1:{pacs.port}", f"{late.aet}@127.0.0.1:{late.port}"]
    svd = Svdmark(tmp_path / "data", destinations,
                  extra=("--settle-seconds", "1", "--fallback-seconds", "15", "--config", str(config))).start()
    journal = Journal(journaldb.url_for(tmp_path / "data"))
    try:
        storescu(files[:-1], svd.port)  # the top slice is held back
        first = wait_until(lambda: (lambda g: g if all(len(g[m]) == 1 for m in ("SR", "SEG", "OT")) else None)(
            results_by_kind(pacs)), 240, "the first results")
        first_uids = _uids(first["SR"] + first["SEG"] + first["OT"])

        storescu(files[-1:], svd.port)  # the late instance: generation 2

        def settled():
            got = results_by_kind(pacs)
            busy = [r for r in journal.deliveries() if r["destination"] == destinations[0]
                    and r["state"] in (DeliveryState.PENDING.value, DeliveryState.SENDING.value)]
            return got if got.get("KO") and len(got["SR"]) == 2 and not busy else None

        got = wait_until(settled, 240, "the new results and the rejection note at the first destination")
        (note,) = got["KO"]  # exactly one note
        assert note.SOPClassUID == KOS
        (title,) = note.ConceptNameCodeSequence
        assert (title.CodeValue, title.CodingSchemeDesignator) == ("113001", "DCM")
        assert rejected_uids(note) == first_uids
        assert note.StudyInstanceUID == first["SR"][0].StudyInstanceUID
        assert note.PatientID == first["SR"][0].PatientID
        dciodvfy = shutil.which("dciodvfy")
        if dciodvfy:  # the note as the PACS stored it is valid
            (path,) = [p for p in pacs.files() if pydicom.dcmread(p, stop_before_pixels=True).Modality == "KO"]
            out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
            assert [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")] == []
        new = {m: [ds for ds in got[m] if str(ds.SOPInstanceUID) not in first_uids] for m in ("SR", "SEG", "OT")}
        assert all(len(v) == 1 for v in new.values()), {m: len(v) for m, v in new.items()}
        # the note goes after the new results (each object received once)
        order = pacs.receptions()
        assert len(order) == len(set(order)) == 7
        by_name = {p.name: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in pacs.files()}
        sequence = [by_name[n] for n in order]
        assert sequence.index(str(note.SOPInstanceUID)) > max(sequence.index(str(ds.SOPInstanceUID))
                                                             for v in new.values() for ds in v)

        # the second destination comes up: only the new results, no note, none of the superseded ones
        late.start()
        late_got = wait_until(lambda: (lambda g: g if all(len(g[m]) == 1 for m in ("SR", "SEG", "OT")) else None)(
            results_by_kind(late)), 120, "the new results at the destination that was down")
        assert _uids(late_got["SR"] + late_got["SEG"] + late_got["OT"]) == _uids(
            v[0] for v in new.values())
        assert "KO" not in late_got
        states = {r["sop_uid"]: r["state"] for r in journal.deliveries() if r["destination"] == destinations[1]}
        assert {states[u] for u in first_uids} == {DeliveryState.SUPERSEDED.value}
        assert str(note.SOPInstanceUID) not in states
    finally:
        journal.close()
        svd.stop()
        pacs.stop()
        late.stop()
