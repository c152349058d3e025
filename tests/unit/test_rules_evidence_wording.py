"""The flags' text against the evidence (../shared/EVIDENCE.md), as a clinical review read it: the ECMO categories'
source, no source "large WML" finding attached to svdmark's own cut-point, the aspirin flag only on an acute
ischaemic stroke pathway, and the burden grades of fractional interval ends as the source words them."""
from __future__ import annotations

import pytest
from pydicom import Dataset

from svdmark.domain import BurdenGrade, Interval
from svdmark.rules import RuleSet

from .test_rules import _packaged_text, cmb, only, wml


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return RuleSet.load()


def _study(description: str) -> Dataset:
    ds = Dataset()
    ds.StudyDescription = description
    return ds


def test_the_ecmo_statement_names_the_categories_source(ruleset):
    f = only(ruleset.evaluate(cmb(12), _study("MRI brain after ECMO")), "cmb-burden-ecmo")
    assert "Topiwala et al. (J Stroke Cerebrovasc Dis 2022)" in f.statement
    assert "categories were derived in patients after ECMO" not in f.statement


@pytest.mark.parametrize("cut_point", [17.0, 0.59])
def test_svdmarks_cut_point_carries_no_finding_of_the_sources_large_wml_group(cut_point, tmp_path):
    """The source reports no significant aspirin effect on sICH in "large" WML but defines no cut-point: said only
    at or above svdmark's cut-point (a site may set the trial's median), it would reassure about a group of
    svdmark's choosing."""
    text = _packaged_text().replace("cut_point_ml = 17.0", f"cut_point_ml = {cut_point}")
    (tmp_path / "rules.toml").write_text(text)
    rs = RuleSet.load(tmp_path / "rules.toml")
    at = only(rs.evaluate(wml(cut_point + 0.01), _study("CT stroke protocol")), "aspirin-sich-wml")
    assert at.category == "large-wml"
    assert "not associated with a significant difference" not in at.statement
    assert "did not define large WML" in at.statement
    assert "No WML-volume subgroup showed safe clinical benefit" in at.statement


@pytest.mark.parametrize("description", ["CT HEAD haemorrhagic stroke", "CT head hemorrhagic stroke",
                                         "CT head: headache, old stroke 2015", "CT brain - no stroke, trauma",
                                         "CT head trauma", "CT head, history of stroke"])
def test_the_aspirin_flag_is_not_attached_outside_acute_ischaemic_stroke(ruleset, description):
    flags = ruleset.evaluate(wml(3.0), _study(description))
    assert "aspirin-sich-wml" not in {f.rule_id for f in flags}, description


@pytest.mark.parametrize("description", ["CT Stroke protocol", "Code stroke NCCT", "Stroke - rule out ICH",
                                         "Acute stroke EVT", "CT head: stroke, thrombectomy candidate"])
def test_the_aspirin_flag_stays_on_the_acute_stroke_pathway(ruleset, description):
    only(ruleset.evaluate(wml(3.0), _study(description)), "aspirin-sich-wml")


@pytest.mark.parametrize("x, grade", [(9.4, 1), (9.5, 1), (9.99, 1), (10, 2), (30, 2), (30.5, 3), (31, 3)])
def test_fractional_counts_are_graded_as_the_source_words_the_grades(ruleset, x, grade):
    assert int(BurdenGrade.of_value(x)) == grade
    f = only(ruleset.evaluate(cmb(9, Interval(8.6, 9.4, "x")), _study("ECMO follow-up")), "cmb-burden-ecmo")
    assert (f.values["grade_low"], f.values["grade_high"]) == (1, 1)
    assert "the grade is uncertain" not in f.statement
