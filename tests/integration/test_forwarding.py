"""A PACS forwarding whole studies: the pydicom test corpus (files nobody here wrote) in ONE
dcmsend association. No abort; every instance dcmtk can read gets a DIMSE status (CT/MR stored
or refused with a specific status, other classes acknowledged and discarded); one log line per
refused presentation context; lossy-compressed CT/MR stored and marked.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pydicom
import pytest

from tests import journaldb
from tests.peers import DCMTK, Svdmark, wait_until

pytest.importorskip("pydicom.data")


def _corpus(dest: Path) -> dict[str, str]:
    """Copies of the pydicom-data files that pydicom parses and whose SOP Class UID dcmtk reads the
    same (dcmsend sends what dcmtk reads); returns file name -> SOP Instance UID."""
    from pydicom.data import get_testdata_files

    dest.mkdir()
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, f in enumerate(sorted(get_testdata_files())):
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
                sop_class, sop_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
                str(ds.file_meta.TransferSyntaxUID)
            except Exception:
                continue
            dump = subprocess.run([str(DCMTK / "dcmdump"), "-q", "-Un", "+P", "0008,0016", f], capture_output=True,
                                  text=True, timeout=30)
            if dump.returncode != 0 or f"[{sop_class}]" not in dump.stdout:
                continue
            name = f"{i:03d}_{Path(f).name}"
            shutil.copy(f, dest / name)
            out[name] = sop_uid
    return out


def _report(text: str) -> list[dict[str, str]]:
    entries = []
    for block in text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z. ]+?)\s*: (.*)$", block, flags=re.M))
        if "Filename" in fields:
            entries.append(fields)
    return entries


def test_whole_corpus_in_one_association(tmp_path):
    files = _corpus(tmp_path / "corpus")
    assert len(files) > 150
    svc = Svdmark(tmp_path / "data", [], extra=("--settle-seconds", "1", "--fallback-seconds", "30")).start()
    try:
        report = tmp_path / "report.txt"
        r = subprocess.run([str(DCMTK / "dcmsend"), "-aet", "PACS", "-aec", "SVDMARK", "-ma", "-nh", "-dn", "-nuc",
                            "+sd", "+crf", str(report), "127.0.0.1", str(svc.port), str(tmp_path / "corpus")],
                           capture_output=True, text=True, timeout=600)
        entries = _report(report.read_text())
        summary = report.read_text().split("Status Summary")[-1]
        assert "Number of associations   : 1" in summary, summary
        assert len(entries) == len(files)
        not_sent = [e["Filename"] for e in entries if e["DIMSE Status"].startswith("<not sent>")]
        # dcmsend proposes one context per SOP class and syntax: every one must have been accepted
        assert not not_sent, f"{len(not_sent)} not sent (aborted association or refused context): {not_sent[:5]}\n" \
                             f"{r.stderr[-2000:]}"
        statuses = {e["Filename"].rsplit("/", 1)[-1]: e["DIMSE Status"].split()[0].lower() for e in entries}
        log = svc.log_text()
        assert "association_ended_without_release" not in log and "Association Aborted" not in log
        journal = svc.cli("jobs", "list", "--json")  # the service is alive and its journal readable
        assert journal.returncode == 0, journal.stderr
    finally:
        svc.stop()
    ct_mr = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.4",
             "1.2.840.10008.5.1.4.1.1.4.1"}
    classes = {e["Filename"].rsplit("/", 1)[-1]: e["SOP Class"].split()[0] for e in entries}
    others = [n for n, c in classes.items() if c not in ct_mr]
    assert others and all(statuses[n] == "0x0000" for n in others), \
        [(n, statuses[n]) for n in others if statuses[n] != "0x0000"]
    refused = {n: s for n, s in statuses.items() if s != "0x0000"}
    assert all(s in ("0xa900", "0xc000", "0xc001", "0xc002", "0xc003", "0xa701") for s in refused.values()), refused
    lines = [ln for ln in log.splitlines() if "instance_rejected" in ln]
    assert len(lines) == len(refused)
    # every instance svdmark stored is in its journal, and the lossy ones are marked
    stored = {row[0]: (row[1], json.loads(row[2])) for row in
              journaldb.query(tmp_path / "data", "SELECT sop_uid, transfer_syntax, geometry FROM instances")}
    ok_ct_mr = [n for n, c in classes.items() if c in ct_mr and statuses[n] == "0x0000"]
    assert {files[n] for n in ok_ct_mr} <= set(stored)
    lossy = {uid for uid, (ts, geo) in stored.items() if geo.get("lossy_source")}
    lossy_ts = {uid for uid, (ts, _) in stored.items() if ts in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.91")}
    assert lossy_ts and lossy_ts <= lossy
    print(f"{len(files)} files in one association: {len(ok_ct_mr)} CT/MR stored, {len(refused)} refused "
          f"({sorted(set(refused.values()))}), {len(others)} other classes discarded, {len(lossy)} marked lossy")


def test_refused_presentation_contexts_are_logged_once_each(tmp_path):
    """A private SOP class cannot be negotiated: one line per refused context, naming caller, class, syntaxes."""
    from pynetdicom import AE
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

    svc = Svdmark(tmp_path / "data", []).start()
    try:
        ae = AE(ae_title="PACS")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context("1.3.12.2.1107.5.9.1", ExplicitVRLittleEndian)  # a private (CSA) class
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.4.100"])  # CT as MPEG-2 video
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", JPEGBaseline8Bit)  # lossy CT: accepted
        assoc = ae.associate("127.0.0.1", svc.port, ae_title="SVDMARK")
        assert assoc.is_established
        assert len(assoc.accepted_contexts) == 1
        assoc.release()
        lines = wait_until(lambda: [ln for ln in svc.log_text().splitlines() if "presentation_context_refused" in ln]
                           if svc.log_text().count("presentation_context_refused") >= 2 else None, 10, "2 lines")
    finally:
        svc.stop()
    assert len(lines) == 2
    assert all('calling_ae="PACS"' in ln for ln in lines)
    assert any('sop_class="1.3.12.2.1107.5.9.1"' in ln and "not supported" in ln for ln in lines)
    assert any('transfer_syntaxes="1.2.840.10008.1.2.4.100"' in ln and "transfer syntaxes" in ln for ln in lines)
