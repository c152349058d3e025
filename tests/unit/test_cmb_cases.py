"""training.cmb_cases: the probes' shared arguments, their refusal of reported splits and where a run is written."""
from __future__ import annotations

import argparse
import json
import os

import pytest

from training import cmb_cases


def _parser(validation: bool = True) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    cmb_cases.add_arguments(ap, validation)
    return ap


def test_a_probe_reads_development_data_or_validation_splits_never_both(capsys):
    args = _parser().parse_args(["--set", "val,val_atlas", "--n", "3"])
    assert (args.set, args.n, args.data, args.threads) == ("val,val_atlas", 3, None, 2)
    with pytest.raises(SystemExit):
        _parser().parse_args(["--set", "val", "--data", "/x"])
    with pytest.raises(SystemExit):  # a probe that needs development labels has no --set
        _parser(validation=False).parse_args(["--set", "val"])


def test_a_reported_split_is_refused():
    args = _parser().parse_args(["--set", "heldout", "--n", "1"])
    with pytest.raises(SystemExit, match="never"):
        cmb_cases.cases(args, "a test probe informs a choice")


def test_the_run_is_named_by_kind_data_size_model_and_suffix(tmp_path, monkeypatch):
    monkeypatch.setattr(cmb_cases, "RUNS", tmp_path / "runs")

    class Spec:
        label = "cmb-swi 1.4.6"

    path = cmb_cases.write_run("misses", "choose", Spec(), {"n": 30, "x": 1}, "_on-criteria")
    assert path == tmp_path / "runs" / "misses_choose_30_cmb-swi-1.4.6_on-criteria.json"
    assert json.loads(path.read_text()) == {"n": 30, "x": 1}


def test_our_splits_are_named_with_the_variables_that_change_their_draws(monkeypatch):
    for k in [k for k in os.environ if k.startswith("SVDMARK_TRAIN_")]:
        monkeypatch.delenv(k)
    assert cmb_cases.split_name("val,val_atlas") == "val,val_atlas"
    monkeypatch.setenv("SVDMARK_TRAIN_CACHE", "/elsewhere")  # where the draws are kept changes none
    monkeypatch.setenv("SVDMARK_TRAIN_SWI_BLOOMING", "1")
    assert cmb_cases.split_name("val,val_atlas") == "val,val_atlas+SWI_BLOOMING1"
