"""Where a review of the research path (batch/) found it wrong: a resumed run that reused rows of another rule set
or another routing rule, the cohort's patient count, ages in weeks or days, and folders counted as files."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
from pydicom.dataset import Dataset

from svdmark.batch import run as R
from svdmark.batch import table as T
from svdmark.batch.acquisition import descriptors
from svdmark.batch.cohort import cohort
from svdmark.batch.discover import discover

from .conftest import run_cli

KEY = b"k" * 32


def _archive(tmp_path: Path, studies) -> Path:
    target = next(s for s in studies["ncct"].series if s.target)
    shutil.copytree(Path(studies["ncct"].out_dir) / target.folder, tmp_path / "archive" / "ct")
    return tmp_path / "archive"


def _analyse(tmp_path: Path, root: Path, fake_models, *extra) -> dict:
    env = {"SVDMARK_MODELS_DIR": str(fake_models), "SVDMARK_PSEUDONYM_KEY": "test-key"}
    r = run_cli("analyze", root, "--output", tmp_path / "out", "--json", "--data-dir", tmp_path / "nodata", *extra,
                env=env, check_rc=0)
    return json.loads(r.stdout)


def test_a_trials_rules_file_that_kept_the_version_it_copied_is_not_reused(tmp_path, studies, fake_models):
    root = _archive(tmp_path, studies)
    packaged = Path(R.__file__).parents[1] / "data" / "rules.toml"
    trial = tmp_path / "trial-rules.toml"
    text = packaged.read_text()
    assert 'id = "svdmark-rules"' in text and "cut_point_ml = 17.0" in text
    trial.write_text(text.replace('id = "svdmark-rules"', 'id = "trial-x-rules"')
                     .replace("cut_point_ml = 17.0", "cut_point_ml = 100000.0"))
    (tmp_path / "a.toml").write_text('[flags]\napplicability = "always"\n')
    (tmp_path / "b.toml").write_text(f'[analysis]\nrules_file = "{trial}"\n[flags]\napplicability = "always"\n')
    assert _analyse(tmp_path, root, fake_models, "--config", tmp_path / "a.toml")["counts"]["analysed"] == 1
    first = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert first.loc[0, "flag_aspirin_sich_wml_category"] == "large-wml"  # the fake model reads above 17 mL
    _analyse(tmp_path, root, fake_models, "--config", tmp_path / "b.toml")
    (row,) = pd.read_parquet(tmp_path / "out" / "results.parquet").to_dict("records")
    assert (row["ruleset_id"], row["flag_aspirin_sich_wml_category"]) == ("trial-x-rules", "below-cut-point")


def test_a_series_another_routing_rule_routes_now_is_analysed_again(tmp_path, studies, fake_models):
    root = _archive(tmp_path, studies)
    assert _analyse(tmp_path, root, fake_models)["counts"]["analysed"] == 1
    old_rule = pd.read_parquet(tmp_path / "out" / "results.parquet").loc[0, "rule_id"]
    text = (Path(R.__file__).parents[1] / "data" / "routing.toml").read_text()
    assert f'id = "{old_rule}"' in text
    (tmp_path / "routing.toml").write_text(text.replace(f'id = "{old_rule}"', f'id = "{old_rule}-trial"'))
    (tmp_path / "svdmark.toml").write_text(f'[analysis]\nrouting_file = "{tmp_path / "routing.toml"}"\n')
    _analyse(tmp_path, root, fake_models, "--config", tmp_path / "svdmark.toml")
    (row,) = pd.read_parquet(tmp_path / "out" / "results.parquet").to_dict("records")
    assert row["rule_id"] == f"{old_rule}-trial"


def test_series_without_a_patient_id_are_no_patient_in_either_table(tmp_path):
    rows = [T.base_row(study_uid=f"1.2.3.{i}", series_uid=f"1.2.3.{i}.1", patient_pseudonym=p, status=T.IGNORED,
                       routing="ignored", reason="localizer", n_instances=1)
            for i, p in enumerate(["aaaa1111aaaa1111", "aaaa1111aaaa1111", "bbbb2222bbbb2222", "", None])]
    T.write_tables(T.frame(rows), tmp_path / "results")
    assert [cohort(T.read_table(tmp_path / f"results.{ext}"))["patients"] for ext in ("parquet", "csv")] == [2, 2]


def test_an_age_in_weeks_or_days_is_whole_years():
    def age(text):
        ds = Dataset()
        ds.PatientAge, ds.StudyDate = text, "20240101"
        return descriptors(ds, KEY)["patient_age_years"]

    assert [age(a) for a in ("065Y", "024M", "104W", "400D", "006D")] == [65, 2, 2, 1, 0]


def test_folders_not_read_are_listed_but_not_counted_as_files(tmp_path, studies):
    root = _archive(tmp_path, studies)
    n = len(list((root / "ct").iterdir()))
    os.symlink(root / "ct", root / "ct_link")
    stats: dict = {}
    groups, errors, _ = discover([root, root / "ct"], KEY, stats=stats)
    assert len(groups) == 1 and len(groups[0].instances) == n
    assert (stats["files"], stats["unusable"]) == (n, 0)
    assert sorted(Path(e.file).name for e in errors) == ["ct", "ct_link"]
    assert all("folder" not in e.as_row() for e in errors)
