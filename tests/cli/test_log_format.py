"""The service log of a whole run (dcmtk storescu → `svdmark serve` → dcmtk storescp) is svdmark's
structured lines only, in both formats: every line parses, libraries' chatter is held at WARNING in
the same shape, the event names tests and operators grep for are there, and no patient identifier."""
from __future__ import annotations

import json
import logging
import random
import threading
from pathlib import Path

import pydicom
import pytest

from svdmark import health, logs

from .conftest import DCMTK, StoreSCP, Svdmark, run_cli, storescu, wait_until

pytestmark = [pytest.mark.interop]


def _parse(line: str, fmt: str) -> dict:
    if fmt == "json":
        doc = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} is not JSON: {line}"))
        assert isinstance(doc, dict) and {"ts", "level", "logger", "event"} <= set(doc), line
        return doc
    m = logs.TEXT_LINE.match(line)
    assert m, f"not a structured text line: {line!r}"
    event = m["event"]
    return {"level": m["level"], "logger": m["logger"], "event": json.loads(event) if event[0] == '"' else event}


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_whole_run_logs_only_structured_lines(tmp_path, studies, fake_models, fmt):
    if not (DCMTK / "storescp").exists():
        pytest.skip("dcmtk is not installed (/usr/bin/storescp); see scripts/test.sh")
    pacs = StoreSCP(tmp_path / "pacs", aet="LOGPACS").start()
    svd = Svdmark(tmp_path / "data", [f"{pacs.aet}@127.0.0.1:{pacs.port}"],
                  extra=("--settle-seconds", "1", "--fallback-seconds", "10", "--log-level", "INFO",
                         "--log-format", fmt),
                  env={"SVDMARK_MODELS_DIR": str(fake_models)})
    try:
        svd.start()
        files = sorted(p for s in (studies["ncct"], studies["swi"]) for p in Path(s.out_dir).rglob("*.dcm"))
        storescu(files, svd.port, calling="LOGTEST")
        targets = {s.series_uid for st in (studies["ncct"], studies["swi"]) for s in st.series if s.target}

        def finished():
            jobs = json.loads(svd.cli("jobs", "list", "--json").stdout)
            done = {j["series_uid"] for j in jobs if j["state"] == "done"}
            return targets <= done and len(pacs.files()) >= 3 * len(targets)

        wait_until(finished, 240, "both target series analysed and their results delivered")
        wait_until(lambda: svd.log_text().count('delivered') >= 3 * len(targets), 60, "delivery lines")
    finally:
        svd.stop()
        pacs.stop()
    lines = svd.log_text().splitlines()
    assert lines, "the service wrote no log"
    parsed = [_parse(line, fmt) for line in lines]  # every line, no raw library text, no traceback lines
    events = {p["event"] for p in parsed}
    assert {"listening", "series_complete", "analysis_done", "delivered", "stopped"} <= events, events
    assert all(p["logger"].startswith("svdmark") or p["event"] == "library_message" for p in parsed)
    libs = [p for p in parsed if not p["logger"].startswith("svdmark")]
    assert all(logging.getLevelName(p["level"]) >= logging.WARNING for p in libs), libs
    if fmt == "json":
        done = [p for p in parsed if p["event"] == "analysis_done"]
        assert {p["series_uid"] for p in done} == targets and all(isinstance(p["job_id"], int) for p in done)
    text = "\n".join(lines)
    for study in (studies["ncct"], studies["swi"]):
        src = pydicom.dcmread(next(Path(study.out_dir).rglob("*.dcm")), stop_before_pixels=True)
        for secret in (str(src.PatientName), str(src.PatientID), str(src.get("PatientBirthDate", "")) or "-"):
            assert secret not in text, f"patient identifier {secret!r} in the {fmt} log"


def test_log_format_option_and_environment(tmp_path):
    r = run_cli("serve", "--log-format", "xml")
    assert r.returncode == 2 and "--log-format" in r.stderr
    for nested in (("results", "summary"), ("jobs", "list"), ("models", "list")):  # after a sub-subcommand too
        r = run_cli(*nested, "--log-format", "xml")
        assert r.returncode == 2 and "--log-format" in r.stderr and "xml" in r.stderr, (nested, r.stderr)
    r = run_cli("routing", "explain", tmp_path / "missing.dcm", env={"SVDMARK_LOG_FORMAT": "yaml"})
    assert r.returncode == 1 and "SVDMARK_LOG_FORMAT" in r.stderr


def test_library_records_and_exceptions_are_one_line(capsys):
    """The formatter itself: a library's multi-line text and a traceback stay on their line."""
    import io

    out = io.StringIO()
    try:
        logs.setup("INFO", "json", stream=out)
        logging.getLogger("highdicom.sr.sop").info("18 lines of INFO per analysis")  # below WARNING: dropped
        logging.getLogger("pynetdicom.assoc").error("Association Aborted\n(A-ABORT)")
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            logs.event(logging.getLogger("svdmark.service"), "loop_error", logging.ERROR, exc_info=True, thread="t",
                       ratio=float("inf"))
        with pytest.raises(ValueError, match="patient identifiers"):
            logs.event(logging.getLogger("svdmark.x"), "oops", PatientID="123")
    finally:
        logging.getLogger().handlers[:] = []
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
            for line in out.getvalue().splitlines()]
    assert [r["event"] for r in rows] == ["library_message", "loop_error"]
    assert rows[0] == {"ts": rows[0]["ts"], "level": "ERROR", "logger": "pynetdicom.assoc",
                       "event": "library_message", "message": "Association Aborted (A-ABORT)"}
    assert rows[1]["thread"] == "t" and rows[1]["ratio"] == "inf" and "RuntimeError: boom\nsecond line" in rows[1]["exc"]
    text = io.StringIO()
    logs.setup("INFO", "text", stream=text)
    try:
        logs.event(logging.getLogger("svdmark.worker"), "analysis_done", job_id=7, reason='a "quoted"\nvalue',
                   ok=True, missing=None, ml=1.25, nan=float("nan"))
    finally:
        logging.getLogger().handlers[:] = []
    line = text.getvalue().rstrip("\n")
    assert logs.TEXT_LINE.match(line) and "\n" not in line
    assert line.split(" ", 4)[1:4] == ["INFO", "svdmark.worker", "analysis_done"]
    assert line.endswith('job_id=7 reason="a \\"quoted\\"\\nvalue" ok=true missing=null ml=1.25 nan="nan"')


def test_config_file_sets_the_format_and_the_option_wins(tmp_path, fake_models):
    """`[logging] format = "json"` in the config file makes serve log JSON; --log-format text overrides it."""
    cfg = tmp_path / "svdmark.toml"
    cfg.write_text('[logging]\nformat = "json"\n')
    for extra, fmt in ((("--config", str(cfg)), "json"), (("--config", str(cfg), "--log-format", "text"), "text")):
        svd = Svdmark(tmp_path / f"data-{fmt}", [], extra=extra, env={"SVDMARK_MODELS_DIR": str(fake_models)})
        try:
            svd.start()
            wait_until(lambda: "listening" in svd.log_text(), 60, "the listening line")
        finally:
            svd.stop()
        lines = svd.log_text().splitlines()
        assert lines and all(_parse(line, fmt) for line in lines)
    bad = tmp_path / "bad.toml"
    bad.write_text('[logging]\nformat = "xml"\n')
    r = run_cli("serve", "--config", bad)
    assert r.returncode != 0 and "[logging] format" in r.stderr


def test_a_logged_traceback_carries_no_value_an_exception_quoted():
    """pydicom and highdicom quote the value they could not read; a traceback in the log names the exception by
    reason_of, as the reason field does, through its whole chain."""
    import io

    from svdmark.guarded import GuardedLoop

    def step():
        name, born = "DOE" + "^JOHN", "1923" + "0417"  # built here: the traceback's source line does not show them
        try:
            raise KeyError(f"PatientBirthDate '{born}'")
        except KeyError as exc:
            raise ValueError(f"Invalid value for VR PN: '{name}'") from exc

    out = io.StringIO()
    try:
        logs.setup("INFO", "json", stream=out)
        GuardedLoop("phi", step, threading.Event(), rng=random.Random(1)).once()
    finally:
        logging.getLogger().handlers[:] = []
        health.clear_problem("phi")
    (line,) = [json.loads(x) for x in out.getvalue().splitlines() if '"loop_failing"' in x]
    assert "DOE^JOHN" not in out.getvalue() and "19230417" not in out.getvalue()
    assert "in step" in line["exc"] and "ValueError: Invalid value for VR PN: '…'" in line["exc"]
    assert line["exc"].count("Traceback (most recent call last)") == 2 and "KeyError: " in line["exc"]
