"""`analyze --workers 2`: a worker that dies while a finished row is being written breaks the pool, and the next
submission (not a result) says so; the series in flight run again, each alone, and every series gets its row. Real
worker processes (spawned), with the analysis replaced by stand-ins."""
import os
import time

from svdmark import config
from svdmark.batch import run


def fake_init(*args):
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def fake_analyse(g, out, cfg, constants, decision):
    if g == "fast":
        return {"series": g, "status": "analysed"}
    if g == "dies":
        time.sleep(0.5)
        os._exit(1)  # the OOM killer
    time.sleep(2.0)
    return {"series": g, "status": "analysed"}


def test_a_worker_dying_while_a_row_is_consumed_costs_no_series(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "_init_worker", fake_init)
    monkeypatch.setattr(run, "analyse_group", fake_analyse)
    monkeypatch.setattr(run, "_worker_died", lambda g, d: {"series": g, "status": "failed"})
    cfg = config.load(None, env={})
    runner = run.Runner(cfg, tmp_path / "out", workers=2, progress=False)
    todo = [("fast", None), ("dies", None)] + [(f"slow{i}", None) for i in range(4)]
    rows = []
    for row in runner._execute(todo, frozenset()):
        rows.append(row)
        if row["series"] == "fast":
            time.sleep(3.0)  # the consumer writes the row; meanwhile the other worker dies
    assert sorted(r["series"] for r in rows) == sorted(g for g, _ in todo)
