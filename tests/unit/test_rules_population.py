"""svdmark.rules: every flag states its evidence population first, and is attached only where it applies."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence

from svdmark import config as config_mod
from svdmark.domain import CmbFindings, Interval, Microbleed, Quality, WmlFindings
from svdmark.errors import ConfigError
from svdmark.rules import RuleSet

MASK = np.zeros((2, 4, 4), np.uint8)
WITHHELD = Quality(measurable=False, reasons=("image noise too high",))
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return RuleSet.load()


def wml(v: float = 3.0, **kw) -> WmlFindings:
    return WmlFindings(volume_ml=v, mask=MASK, **kw)


def cmb(n: int = 3, **kw) -> CmbFindings:
    return CmbFindings(microbleeds=tuple(Microbleed((float(i), 0.0, 0.0), 3.0, 0.9) for i in range(n)), mask=MASK, **kw)


def header(**attrs) -> Dataset:
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def coded(meaning: str) -> Sequence:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "X123", "99LOCAL", meaning
    return Sequence([item])


# --------------------------------------------------------------------------- population first


ALL_CASES = [wml(0.0), wml(3.0), wml(17.0), wml(16.5, interval=Interval(15.0, 18.0, "tta")),
             wml(2.0, quality=WITHHELD), cmb(0), cmb(9), cmb(10), cmb(31), cmb(9, interval=Interval(8, 12, "x")),
             cmb(5, quality=WITHHELD)]


@pytest.mark.parametrize("findings", ALL_CASES, ids=lambda f: type(f).__name__)
def test_statement_starts_with_the_population(ruleset, findings):
    (flag,) = ruleset.evaluate(findings)
    assert flag.population and flag.statement.startswith(flag.population + " ")
    first_sentence = flag.statement.split("; it was not studied")[0]
    if isinstance(findings, WmlFindings):
        assert first_sentence.startswith("Evidence population: adults undergoing endovascular treatment for acute "
                                         "ischaemic stroke (MR CLEAN-MED trial, 614 patients")
    else:
        assert first_sentence.startswith("Evidence population: 138 adults after extracorporeal membrane "
                                         "oxygenation (ECMO)")
    assert flag.population.endswith("it was not studied in other patients.")
    assert flag.brief and all(len(line) < 200 for line in flag.brief)


def test_brief_gives_the_interaction_as_reported_and_the_category(ruleset):
    (below,) = ruleset.evaluate(wml(3.0))
    (large,) = ruleset.evaluate(wml(40.0))
    for f in (below, large):
        assert f.brief[0].startswith("Aspirin \u00d7 WML interaction on sICH: aOR 0.96 per mL (95% CI 0.93\u20130.99)")
        assert "0.40" not in " ".join(f.brief) and "0.20" not in " ".join(f.brief)  # no computed factor
        assert f.brief[-1].startswith("No WML-volume subgroup showed safe clinical benefit")
    assert below.brief[1] == "Category: Below svdmark cut-point (17.0 mL)."
    assert large.brief[1] == "Category: Large WML (>= 17.0 mL, svdmark cut-point)."
    (withheld,) = ruleset.evaluate(wml(3.0, quality=WITHHELD))
    assert withheld.brief[0] == "Not evaluated: no reliable WML volume."
    assert not any(ch.isdigit() for ch in " ".join(withheld.brief))


# --------------------------------------------------------------------------- applicability


@pytest.mark.parametrize("attrs,applies", [
    ({"StudyDescription": "CT HEAD W/O CONTRAST"}, False),
    ({"StudyDescription": "CT^Kopf"}, False),
    ({}, False),
    ({"StudyDescription": "CT Code Stroke"}, True),
    ({"StudyDescription": "NCCT pre-thrombectomy"}, True),
    ({"StudyDescription": "CT HEAD", "RequestedProcedureDescription": "EVT work-up"}, True),
    ({"StudyDescription": "CT HEAD", "RequestedProcedureCodeSequence": coded("Acute stroke protocol CT")}, True),
    ({"StudyDescription": "Revolving door"}, False),  # "evt" inside a word is no match
])
def test_aspirin_flag_only_on_the_stroke_pathway(ruleset, attrs, applies):
    flags = ruleset.evaluate(wml(5.0), header(**attrs))
    assert [f.rule_id for f in flags] == (["aspirin-sich-wml"] if applies else [])


def test_cmb_flag_only_after_ecmo(ruleset):
    assert ruleset.evaluate(cmb(12), header(StudyDescription="MRI BRAIN")) == ()
    (flag,) = ruleset.evaluate(cmb(12), header(StudyDescription="MR Brain post-ECMO"))
    assert flag.category == "grade-2"


def test_withheld_results_follow_the_same_condition(ruleset):
    assert ruleset.evaluate(wml(3.0, quality=WITHHELD), header(StudyDescription="CT HEAD")) == ()
    (f,) = ruleset.evaluate(wml(3.0, quality=WITHHELD), header(StudyDescription="Stroke CT"))
    assert f.category == "not-measurable"


def test_modes_and_site_conditions(ruleset):
    plain = header(StudyDescription="CT HEAD W/O CONTRAST")
    assert len(ruleset.configured("always").evaluate(wml(3.0), plain)) == 1
    assert ruleset.configured("never").evaluate(wml(3.0), header(StudyDescription="Code stroke")) == ()
    site = ruleset.configured("condition", {"aspirin-sich-wml": {
        "description": "our stroke protocol", "any": [{"attr": "StudyDescription", "equals": "CT SCHLAGANFALL"}]}})
    assert len(site.evaluate(wml(3.0), header(StudyDescription="ct schlaganfall"))) == 1
    assert site.evaluate(wml(3.0), header(StudyDescription="Code stroke")) == ()  # replaced, not added
    assert site.applies(site.rule("aspirin-sich-wml"), header(StudyDescription="CT Schlaganfall"))[1] \
        .startswith("our stroke protocol: StudyDescription is 'CT Schlaganfall'")
    # the CMB rule kept its packaged condition
    assert len(site.evaluate(cmb(2), header(StudyDescription="ECMO follow-up"))) == 1


@pytest.mark.parametrize("mode,conditions,message", [
    ("sometimes", None, "not one of condition, always, never"),
    ("condition", {"no-such-rule": {"description": "x", "any": [{"attr": "Modality", "equals": "CT"}]}},
     "unknown rule id(s) no-such-rule"),
    ("condition", {"aspirin-sich-wml": {"any": [{"attr": "Modality", "equals": "CT"}]}}, "needs a 'description'"),
    ("condition", {"aspirin-sich-wml": {"description": "x"}}, "at least one 'all' or 'any'"),
    ("condition", {"aspirin-sich-wml": {"description": "x", "any": [{"attr": "StudyDescription", "regex": "("}]}},
     "invalid regular expression"),
])
def test_bad_applicability_settings(ruleset, mode, conditions, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ruleset.configured(mode, conditions)


def test_config_file_flags_section(tmp_path):
    p = tmp_path / "svdmark.toml"
    p.write_text('[flags]\napplicability = "condition"\n\n[flags.conditions.aspirin-sich-wml]\n'
                 'description = "site stroke protocol"\n'
                 'any = [ { attr = "StudyDescription", regex = "^CT STROKE" } ]\n', encoding="utf-8")
    cfg = config_mod.load(p, env={})
    assert cfg.flag_applicability == "condition"
    rs = RuleSet.load(cfg.rules_file).configured(cfg.flag_applicability, cfg.flag_conditions)
    assert len(rs.evaluate(wml(3.0), header(StudyDescription="CT STROKE 1"))) == 1
    assert rs.evaluate(wml(3.0), header(StudyDescription="Code stroke")) == ()
    assert config_mod.load(None, env={"SVDMARK_FLAG_APPLICABILITY": "always"}).flag_applicability == "always"
    bad = tmp_path / "bad.toml"
    bad.write_text('[flags]\napplicability = "maybe"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="applicability"):
        config_mod.load(bad, env={})


def test_example_config_documents_the_default():
    text = (REPO / "deploy" / "svdmark.example.toml").read_text(encoding="utf-8")
    cfg = config_mod.load(REPO / "deploy" / "svdmark.example.toml", env={})
    assert cfg.flag_applicability == "condition" and "[flags]" in text
    doc = (REPO / "docs" / "conformance-statement.md").read_text(encoding="utf-8")
    assert "applicability" in doc and "MR CLEAN-MED" in doc and "ECMO" in doc


def test_packaged_conditions_must_parse(tmp_path):
    from importlib import resources

    text = (resources.files("svdmark") / "data" / "rules.toml").read_text(encoding="utf-8")
    p = tmp_path / "rules.toml"
    p.write_text(text.replace('description = "a study on the acute stroke or thrombectomy pathway"\n', "", 1),
                 encoding="utf-8")
    with pytest.raises(ConfigError, match="needs a 'description'"):
        RuleSet.load(p)
    p.write_text(text.replace('population = "Evidence population: adults', 'populaton = "Evidence population: adults',
                              1), encoding="utf-8")
    with pytest.raises(ConfigError, match="population"):
        RuleSet.load(p)
    p.write_text(text.replace("aOR {per_ml_or:.2f} per mL", "aOR {per_ml_orr:.2f} per mL", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match="wording template"):  # a typo in a summary line fails at load
        RuleSet.load(p)


def test_not_attached_is_logged_without_header_text(ruleset, caplog):
    caplog.set_level("INFO", logger="svdmark.rules")
    assert ruleset.evaluate(wml(3.0), header(StudyDescription="CT HEAD for Smith John")) == ()
    (record,) = [r for r in caplog.records if r.getMessage() == "flag_not_attached"]
    assert record.fields == {"rule": "aspirin-sich-wml", "reason": "not a study on the acute stroke or thrombectomy pathway"}
    assert "Smith" not in repr(record.__dict__)
