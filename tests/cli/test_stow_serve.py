"""`svdmark serve` with a STOW-RS destination from its config file: a real study sent with dcmtk's
storescu is analysed and its SR, SEG and summary arrive in a real Orthanc (DICOMweb plugin, basic
auth) through the outbox; `svdmark outbox list` and `svdmark status` show the destination."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.interop.test_stow import PASSWORD, STOW, USER
from tests.peers import DICOMWEB, ORTHANC, Orthanc, Svdmark, storescu, wait_until

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(not (ORTHANC.exists() and DICOMWEB.exists()), reason="needs Orthanc and its DICOMweb plugin"),
]


def test_serve_delivers_results_to_a_stow_destination(tmp_path, fake_models, studies):
    orthanc = Orthanc.started(tmp_path / "orthanc", **STOW)
    secret = tmp_path / "stow-password"
    secret.write_text(PASSWORD)
    toml = tmp_path / "svdmark.toml"
    url = orthanc.base + "/dicom-web/studies"
    toml.write_text(f'[[destinations]]\nkind = "stow"\nurl = "{url}"\nusername = "{USER}"\n'
                    f'password_file = "{secret}"\n')
    svd = Svdmark(tmp_path / "data", [], env={"SVDMARK_MODELS_DIR": str(fake_models)},
                  extra=("--config", str(toml), "--settle-seconds", "1", "--fallback-seconds", "10"))
    try:
        svd.start()
        storescu(sorted(Path(studies["swi"].out_dir).rglob("*.dcm")), svd.port, calling="STOWTEST")

        def delivered():
            rows = json.loads(svd.cli("outbox", "list", "--json", "--config", str(toml)).stdout)
            return rows if len(rows) == 3 and all(r["state"] == "delivered" for r in rows) else None

        rows = wait_until(delivered, 240, "the SR, SEG and summary delivered by STOW-RS")
        assert {r["destination"] for r in rows} == {f"stow:{url}"}
        assert sorted(r["kind"] for r in rows) == ["seg", "sr", "summary"]
        in_orthanc = orthanc.get("/instances?expand")
        by_uid = {i["MainDicomTags"]["SOPInstanceUID"]: i for i in in_orthanc}
        assert {r["sop_uid"] for r in rows} == set(by_uid), (rows, list(by_uid))  # the results, nothing else
        status = json.loads(svd.cli("status", "--json", "--config", str(toml)).stdout)
        assert status["listener"]["up"] and status["destinations"] == []  # C-ECHO probes C-STORE only
        assert PASSWORD not in svd.log_text()
    finally:
        svd.stop()
        orthanc.stop()
