"""A destination that refuses the SEG's SOP class: the SR and the summary are delivered, the SEG is a dead
letter with its reason, and nothing is left 'sending' (the outbox does not wedge)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from pydicom.uid import UID

from svdmark_phantom import write_study

from tests import journaldb
from tests.peers import DCMTK, StoreSCP, Svdmark, results_by_kind, send_studies, wait_until, wait_for_echo

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
# what the destination takes: Verification, the SR classes and the Secondary Capture family, but no SEG
ACCEPTED = ["1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33",
            "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1",
            "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4"]


def no_seg_profile(path: Path) -> Path:
    """A dcmtk storescp association configuration (``-xf FILE NoSeg``) that has no SEG presentation context."""
    lines = ["[[TransferSyntaxes]]", "[Uncompressed]", "TransferSyntax1 = LocalEndianExplicit",
             "TransferSyntax2 = LittleEndianImplicit", "[[PresentationContexts]]", "[NoSeg]",
             "PresentationContext1 = VerificationSOPClass\\Uncompressed"]
    lines += [f"PresentationContext{k} = {uid}\\Uncompressed" for k, uid in enumerate(ACCEPTED, start=2)]
    lines += ["[[Profiles]]", "[NoSeg]", "PresentationContexts = NoSeg"]
    path.write_text("\n".join(lines) + "\n")
    return path


class NoSegSCP(StoreSCP):
    """dcmtk storescp restricted by an association profile to the classes above."""

    def start(self) -> "NoSegSCP":
        profile = no_seg_profile(self.folder.parent / "noseg.cfg")
        self.proc = subprocess.Popen(
            [str(DCMTK / "storescp"), "-aet", self.aet, "-od", str(self.folder), "-uf", "-xf", str(profile), "NoSeg",
             "-xcr", f"echo #f >> {self.received_log}", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_echo(self.port, self.aet, proc=self.proc)
        return self


def test_destination_without_seg_gets_sr_and_summary_and_the_seg_is_a_dead_letter(tmp_path):
    pacs = NoSegSCP(tmp_path / "pacs").start()
    study = write_study(tmp_path / "in", seed=51, kind="ncct", vendor="ge", distractors=False, matrix=96)
    data = tmp_path / "data"
    svd = Svdmark(data, [f"{pacs.aet}@127.0.0.1:{pacs.port}"]).start()
    try:
        send_studies([study], svd.port)

        def settled():
            rows = json.loads(svd.cli("outbox", "list", "--json").stdout or "[]")
            return rows if len(rows) == 3 and {r["state"] for r in rows} <= {"delivered", "dead"} else None

        rows = wait_until(settled, 240, "three deliveries delivered or dead")
        got = wait_until(lambda: (lambda g: g if len(g["SR"]) + len(g["OT"]) >= 2 else None)(results_by_kind(pacs)),
                         30, "the two delivered results in storescp's folder")
        assert (len(got["SR"]), len(got["OT"]), len(got["SEG"])) == (1, 1, 0)
        dead = [r for r in rows if r["state"] == "dead"]
        assert len(dead) == 1 and dead[0]["attempts"] == 1  # dead at once: no retry can help
        assert f"does not accept SOP class {SEG} ({UID(SEG).name})" in dead[0]["last_error"]
        assert sorted(r["state"] for r in rows) == ["dead", "delivered", "delivered"]
        assert "delivery_dead" in svd.log_text()
    finally:
        svd.stop()
        pacs.stop()


def test_a_stalled_destination_delays_only_itself(tmp_path, pacs):
    """A destination that accepts TCP connections and never answers (a hung PACS) holds its own outbox thread
    for the exporter's 30 s timeout; the healthy destination has all its results before that first try ends."""
    import socket

    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(8)  # the kernel accepts; nobody ever reads or answers
    stalled_port = stalled.getsockname()[1]
    study = write_study(tmp_path / "in", seed=52, kind="ncct", vendor="ge", distractors=False, matrix=96)
    data = tmp_path / "data"
    svd = Svdmark(data, [f"HUNG@127.0.0.1:{stalled_port}", f"{pacs.aet}@127.0.0.1:{pacs.port}"]).start()
    try:
        send_studies([study], svd.port)
        got = wait_until(lambda: (lambda g: g if len(g["SR"]) + len(g["SEG"]) + len(g["OT"]) == 3 else None)(
            results_by_kind(pacs)), 240, "the healthy destination's three results")
        assert (len(got["SR"]), len(got["SEG"]), len(got["OT"])) == (1, 1, 1)
        hung = journaldb.query(data, "SELECT state, attempts FROM deliveries WHERE destination LIKE 'HUNG@%'")
        assert len(hung) == 3 and all(attempts == 0 for _, attempts in hung), hung  # its first try still hangs
    finally:
        svd.stop()
        stalled.close()
