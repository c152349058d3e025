"""`svdmark analyze` with the [flags] setting: the evidence flags follow the study's clinical context."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pydicom

from .conftest import run_cli


def _analyze(tmp_path: Path, src: Path, fake_models: Path, name: str, config: str | None = None,
             env: dict | None = None) -> pd.Series:
    args = ["analyze", src, "--output", tmp_path / f"{name}-out", "--data-dir", tmp_path / f"{name}-data"]
    if config is not None:
        (tmp_path / f"{name}.toml").write_text(config, encoding="utf-8")
        args += ["--config", tmp_path / f"{name}.toml"]
    run_cli(*args, env={"SVDMARK_MODELS_DIR": str(fake_models), **(env or {})}, check_rc=0)
    rows = pd.read_csv(tmp_path / f"{name}-out" / "results.csv", dtype=str)
    return rows[rows["status"] == "analysed"].set_index("series_uid").apply(_flag_rules, axis=1)


def _flag_rules(row: pd.Series) -> set[str]:
    """The rules with a flag on this row: the "flags" column ("rule=category; ...") or, in the tidy
    table, the non-empty "flag_<rule>_category" columns."""
    rules = {x.split("=")[0] for x in str(row["flags"]).split("; ")} if isinstance(row.get("flags"), str) else set()
    rules |= {c[len("flag_"):-len("_category")].replace("_", "-")
              for c, v in row.filter(regex=r"^flag_.*_category$").dropna().items()}
    return rules


def test_flags_follow_the_clinical_context(tmp_path, studies, fake_models):
    target = next(s for s in studies["ncct"].series if s.target)
    plain = tmp_path / "plain"
    shutil.copytree(Path(studies["ncct"].out_dir) / target.folder, plain)
    stroke = tmp_path / "stroke"
    stroke.mkdir()
    for f in sorted(plain.glob("*.dcm")):  # the same images, ordered on the stroke pathway
        ds = pydicom.dcmread(f)
        ds.StudyDescription = "CT Code Stroke"
        ds.save_as(stroke / f.name)

    aspirin = {"aspirin-sich-wml"}
    assert _analyze(tmp_path, plain, fake_models, "default")[target.series_uid] == set()  # "CT^Kopf"
    assert _analyze(tmp_path, stroke, fake_models, "stroke")[target.series_uid] == aspirin
    assert _analyze(tmp_path, plain, fake_models, "always", env={"SVDMARK_FLAG_APPLICABILITY": "always"}) \
        [target.series_uid] == aspirin
    site = ('[flags]\napplicability = "condition"\n[flags.conditions.aspirin-sich-wml]\n'
            'description = "our protocol"\nany = [ { attr = "StudyDescription", equals = "CT^Kopf" } ]\n')
    assert _analyze(tmp_path, plain, fake_models, "site", config=site)[target.series_uid] == aspirin
    assert _analyze(tmp_path, stroke, fake_models, "site2", config=site)[target.series_uid] == set()
