"""svdmark.rules: boundaries, wording, provenance, configuration errors."""
from __future__ import annotations

import math
import re
import tomllib
from importlib import resources

import numpy as np
import pytest

from svdmark.domain import BurdenGrade, CmbFindings, Interval, Microbleed, Quality, RuleSetInfo, WmlFindings
from svdmark.errors import ConfigError
from svdmark.rules import RuleInputError, RuleSet

MASK = np.zeros((2, 4, 4), np.uint8)
EPS = 1e-9


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return RuleSet.load()


def wml(v: float, interval: Interval | None = None, quality: Quality | None = None) -> WmlFindings:
    return WmlFindings(volume_ml=v, mask=MASK, interval=interval, quality=quality)


def cmb(n: int, interval: Interval | None = None, quality: Quality | None = None) -> CmbFindings:
    return CmbFindings(microbleeds=tuple(Microbleed((1.0 * i, 2.0, 3.0), 4.0, 0.9) for i in range(n)),
                       mask=MASK, interval=interval, quality=quality)


TTA = "test-time augmentation, 4 passes, min-max"
WITHHELD = Quality(measurable=False, reasons=("image noise 14 HU exceeds the model's limit of 9 HU",
                                              "out-of-distribution score 3.1 above 2.0"),
                   scores={"noise_hu": 14.0, "ood": 3.1})


def only(flags, rule_id):
    found = [f for f in flags if f.rule_id == rule_id]
    assert len(found) == 1, flags
    return found[0]


# --------------------------------------------------------------------------- loading


def test_info_and_versions(ruleset):
    assert ruleset.info == RuleSetInfo(id="svdmark-rules", version="1.4.0")
    assert {r.id for r in ruleset.rules} == {"aspirin-sich-wml", "cmb-burden-ecmo"}
    for r in ruleset.rules:
        assert r.version and r.evidence_doi.startswith("10.")


def test_load_explicit_path_equals_packaged(tmp_path, ruleset):
    text = (resources.files("svdmark") / "data" / "rules.toml").read_text(encoding="utf-8")
    p = tmp_path / "rules.toml"
    p.write_text(text, encoding="utf-8")
    other = RuleSet.load(p)
    assert other.info == ruleset.info
    assert other.evaluate(wml(3.0)) == ruleset.evaluate(wml(3.0))


def _packaged_text() -> str:
    return (resources.files("svdmark") / "data" / "rules.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "old,new,message",
    [
        ('cut_point_ml = 17.0', 'cut_point_ml = "big"', "cut_point_ml"),
        ('cut_point_ml = 17.0', 'cut_point_ml = -1.0', "cut_point_ml"),
        ('per_ml_ci_low = 0.93', 'per_ml_ci_low = 0.97', "per_ml_ci_low"),
        ('moderate_max = 30', 'moderate_max = 25', "BurdenGrade"),
        ('id = "cmb-burden-ecmo"', 'id = "no-such-rule"', "unknown rule id"),
        ('{cut_point_ml:.1f} mL; the cut-point is an svdmark setting, not from the source study).',
         '{cut_pont_ml:.1f} mL).', "wording template"),
        ('\n[ruleset]\n', '\n[rulesetx]\n', "[ruleset]"),
        ('not_measurable = "not-measurable"   # quality gate: no reliable volume',
         'not_measurable = "withheld"   #', "not_measurable must be 'not-measurable'"),
        ('\ninterval_crosses = "The uncertainty interval ({interval_low:.2f}', '\ninterval_crossez = "(',
         "interval_crosses"),
        ('spans burden grades {grade_low} to {grade_high}', 'spans burden grades {grade_lo}', "wording template"),
    ],
)
def test_bad_rule_files_raise_config_error(tmp_path, old, new, message):
    text = _packaged_text()
    assert old in text
    p = tmp_path / "rules.toml"
    p.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        RuleSet.load(p)
    assert str(p) in str(exc.value)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        RuleSet.load(tmp_path / "nope.toml")
    p = tmp_path / "bad.toml"
    p.write_text("[ruleset\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML"):
        RuleSet.load(p)


# --------------------------------------------------------------------------- aspirin / WML


def test_wml_only_yields_aspirin_flag(ruleset):
    flags = ruleset.evaluate(wml(2.0))
    assert [f.rule_id for f in flags] == ["aspirin-sich-wml"]


def test_zero_volume(ruleset):
    f = only(ruleset.evaluate(wml(0.0)), "aspirin-sich-wml")
    assert f.category == "below-cut-point"
    assert f.input_value == 0.0 and f.input_unit == "ml" and f.input_name == "WML volume"
    assert f.values["or_ratio"] == 1.0 and f.values["ci_low"] == 1.0 and f.values["ci_high"] == 1.0
    assert "0.00 mL" in f.statement


@pytest.mark.parametrize("v", [0.5, 1.0, 5.0, 16.0, 17.0, 40.0])
def test_modification_is_power_of_interaction(ruleset, v):
    f = only(ruleset.evaluate(wml(v)), "aspirin-sich-wml")
    assert f.values["or_ratio"] == pytest.approx(0.96 ** v, rel=1e-12)
    assert f.values["ci_low"] == pytest.approx(0.93 ** v, rel=1e-12)
    assert f.values["ci_high"] == pytest.approx(0.99 ** v, rel=1e-12)
    assert f.values["ci_low"] <= f.values["or_ratio"] <= f.values["ci_high"] <= 1.0
    assert f.input_value == v
    assert f"{v:.2f} mL" in f.statement
    # the interaction as the paper reports it, never a computed factor that reads as a risk estimate
    assert "interaction aOR 0.96 (95% CI 0.93-0.99) per mL" in f.statement
    assert "factor" not in f.statement and not re.search("\u00d7 ?[0-9]", f.statement + " ".join(f.brief))
    assert "aOR 0.96 per mL (95% CI 0.93\u20130.99)" in f.brief[0]


def test_the_category_is_that_of_the_volume_as_reported(ruleset):
    """16.996 mL is reported 17.00 mL: at the 17 mL cut-point, as its reader sees it (the SR, the summary image
    and the table all say 17.00); 16.994 mL is 16.99 mL, below it."""
    at = only(ruleset.evaluate(wml(16.996)), "aspirin-sich-wml")
    assert at.category == "large-wml" and at.input_value == 17.0
    assert "17.00 mL is at or above the svdmark cut-point of 17.0 mL" in at.statement
    below = only(ruleset.evaluate(wml(16.994)), "aspirin-sich-wml")
    assert below.category == "below-cut-point" and "16.99 mL is below" in below.statement
    crossing = only(ruleset.evaluate(wml(16.5, Interval(15.0, 16.996, TTA))), "aspirin-sich-wml")
    assert crossing.values["category_uncertain"] == 1.0 and crossing.values["interval_high"] == 17.0


def test_a_configured_cut_point_is_written_as_it_is_applied(tmp_path):
    text = _packaged_text().replace("cut_point_ml = 17.0", "cut_point_ml = 0.59")
    (tmp_path / "rules.toml").write_text(text)
    rules = RuleSet.load(tmp_path / "rules.toml")
    f = only(rules.evaluate(wml(0.56, Interval(0.3, 0.8, TTA))), "aspirin-sich-wml")
    assert "0.56 mL is below the svdmark cut-point of 0.59 mL" in f.statement
    assert "crosses the svdmark cut-point of 0.59 mL" in f.statement and "0.6 mL" not in f.statement
    assert "Below svdmark cut-point (0.59 mL)" in " ".join(f.brief)


@pytest.mark.parametrize("edit, error", [
    (lambda t: t.replace("{category_text}{uncertainty_text} WML", "{category_text} WML"), "{uncertainty_text}"),
    (lambda t: t.replace("{category_text}{uncertainty_text} WML", "{uncertainty_text} WML"), "{category_text}"),
    (lambda t: t.replace("asymptomatic ICH. {fixed_limitation}", "asymptomatic ICH."), "{fixed_limitation}"),
    (lambda t: t.replace("so no patient-level risk follows", "so clinicians should decide; no risk follows"),
     "prescribes or advises"),
])
def test_a_rule_file_that_drops_what_the_statement_must_say_is_refused(tmp_path, edit, error):
    (tmp_path / "rules.toml").write_text(edit(_packaged_text()))
    with pytest.raises(ConfigError, match=re.escape(error)):
        RuleSet.load(tmp_path / "rules.toml")


def test_cut_point_boundaries(ruleset):
    cut = ruleset.rule("aspirin-sich-wml").thresholds["cut_point_ml"]
    below = only(ruleset.evaluate(wml(cut - 0.01)), "aspirin-sich-wml")  # the reported precision's step
    at = only(ruleset.evaluate(wml(cut)), "aspirin-sich-wml")
    above = only(ruleset.evaluate(wml(cut + EPS)), "aspirin-sich-wml")
    assert below.category == "below-cut-point"
    assert at.category == "large-wml"
    assert above.category == "large-wml"
    assert at.values["cut_point_ml"] == cut
    assert "svdmark setting, not from the source study" in at.statement
    assert "svdmark setting, not from the source study" in below.statement


def test_default_cut_point_matches_its_documented_provenance(ruleset):
    t = ruleset.rule("aspirin-sich-wml").thresholds
    cut = t["cut_point_ml"]
    # "smallest whole mL at which 0.96^V <= 0.5"
    assert cut == math.ceil(math.log(0.5) / math.log(t["per_ml_or"]))
    assert t["per_ml_or"] ** cut <= 0.5 < t["per_ml_or"] ** (cut - 1)
    assert "not from the source study" in t["cut_point_provenance"]


def test_configurable_cut_point(tmp_path):
    p = tmp_path / "rules.toml"
    p.write_text(_packaged_text().replace("cut_point_ml = 17.0", "cut_point_ml = 1.0"), encoding="utf-8")
    rs = RuleSet.load(p)
    assert only(rs.evaluate(wml(0.99)), "aspirin-sich-wml").category == "below-cut-point"
    assert only(rs.evaluate(wml(1.0)), "aspirin-sich-wml").category == "large-wml"


@pytest.mark.parametrize("bad", [-EPS, -1.0, float("nan"), float("inf"), float("-inf")])
def test_invalid_volume_rejected(ruleset, bad):
    with pytest.raises(RuleInputError, match="WML volume") as exc:
        ruleset.evaluate(wml(bad))
    assert isinstance(exc.value, ValueError)


def test_fixed_limitation_always_present(ruleset):
    for v in (0.0, 3.0, 17.0, 80.0):
        s = only(ruleset.evaluate(wml(v)), "aspirin-sich-wml").statement
        assert "No WML-volume subgroup showed safe clinical benefit from periprocedural aspirin or heparin" in s
        assert "did not modify the effect of heparin" in s
    f = only(ruleset.evaluate(wml(3.0)), "aspirin-sich-wml")
    assert f.evidence_doi == "10.1186/s13244-025-02095-2"
    assert f.rule_version == "1.4.0" and f.ruleset_version == "1.4.0"


# --------------------------------------------------------------------------- CMB


@pytest.mark.parametrize(
    "n,grade",
    [(0, 0), (1, 1), (9, 1), (10, 2), (30, 2), (31, 3), (100, 3)],
)
def test_cmb_grade_boundaries(ruleset, n, grade):
    flags = ruleset.evaluate(cmb(n))
    assert [f.rule_id for f in flags] == ["cmb-burden-ecmo"]
    f = flags[0]
    assert f.category == f"grade-{grade}"
    assert f.values["grade"] == grade
    assert grade == int(BurdenGrade.from_count(n))
    assert f.input_value == n and f.input_name == "Cerebral microbleed count"
    assert f.statement.startswith(f"{f.population} {n} cerebral microbleed(s)")
    assert f"burden grade {grade}" in f.statement
    assert BurdenGrade(grade).meaning in f.statement
    assert "cannot show causation" in f.statement
    for word in ("ACT", "fibrinogen", "platelet", "PT"):
        assert word in f.statement
    assert f.evidence_doi == "10.1161/JAHA.124.037029"


# --------------------------------------------------------------------------- uncertainty intervals


def test_wml_interval_within_category(ruleset):
    f = only(ruleset.evaluate(wml(3.2, Interval(2.6, 3.9, TTA))), "aspirin-sich-wml")
    assert f.category == "below-cut-point"
    assert f.values["interval_low"] == 2.6 and f.values["interval_high"] == 3.9
    assert f.values["category_uncertain"] == 0.0
    assert "uncertainty interval 2.60-3.90 mL; test-time augmentation, 4 passes, min-max" in f.statement
    assert "category is uncertain" not in f.statement
    # the number-based evidence is unchanged by an interval
    plain = only(ruleset.evaluate(wml(3.2)), "aspirin-sich-wml")
    assert {k: v for k, v in f.values.items() if k in plain.values} == plain.values
    assert "interval_low" not in plain.values and "category_uncertain" not in plain.values


def test_wml_interval_crossing_cut_point(ruleset):
    f = only(ruleset.evaluate(wml(16.5, Interval(15.2, 18.1, TTA))), "aspirin-sich-wml")
    assert f.category == "below-cut-point"  # the point estimate decides the category
    assert f.values["category_uncertain"] == 1.0
    assert ("The uncertainty interval (15.20-18.10 mL) crosses the svdmark cut-point of 17.0 mL; "
            "the category is uncertain.") in f.statement
    above = only(ruleset.evaluate(wml(17.5, Interval(16.0, 19.0, TTA))), "aspirin-sich-wml")
    assert above.category == "large-wml" and above.values["category_uncertain"] == 1.0
    assert "crosses the svdmark cut-point" in above.statement


@pytest.mark.parametrize("low,v,high,uncertain", [
    (17.0, 17.5, 20.0, False),  # low end exactly at the cut: every end is "at or above"
    (15.0, 16.0, 17.0, True),   # high end exactly at the cut is already "at or above"
    (10.0, 12.0, 16.99, False),
    (12.0, 18.0, 16.0, True),   # point estimate outside its interval, on the other side
])
def test_wml_interval_boundaries(ruleset, low, v, high, uncertain):
    f = only(ruleset.evaluate(wml(v, Interval(low, high, TTA))), "aspirin-sich-wml")
    assert f.values["category_uncertain"] == float(uncertain)
    assert ("category is uncertain" in f.statement) is uncertain


@pytest.mark.parametrize("n,low,high,g_low,g_high", [
    (9, 8, 11, 1, 2),     # crosses 9/10
    (28, 25, 29, 2, 2),   # stays in grade 2
    (30, 29, 31, 2, 3),   # crosses 30/31
    (0, 0, 1, 0, 1),      # none vs. any
    (12, 10, 30, 2, 2),   # both ends on grade 2's own limits
    (10, 9.5, 12, 1, 2),  # a fractional end under 10 is grade 1 ("fewer than 10 CMBs")
    (30, 28, 30.5, 2, 3),  # a fractional end above 30 is grade 3 ("more than 30")
])
def test_cmb_interval_grades(ruleset, n, low, high, g_low, g_high):
    f = only(ruleset.evaluate(cmb(n, Interval(low, high, "ensemble of 5, min-max"))), "cmb-burden-ecmo")
    assert f.category == f"grade-{int(BurdenGrade.from_count(n))}"
    assert (f.values["grade_low"], f.values["grade_high"]) == (g_low, g_high)
    assert f.values["interval_low"] == low and f.values["interval_high"] == high
    uncertain = g_low != g_high
    assert f.values["category_uncertain"] == float(uncertain)
    assert f"(uncertainty interval {low:g}-{high:g}; ensemble of 5, min-max)" in f.statement
    assert f.statement.startswith(f"{f.population} {n} cerebral microbleed(s) detected on SWI")
    sentence = f"spans burden grades {g_low} to {g_high}; the grade is uncertain."
    assert (sentence in f.statement) is uncertain


@pytest.mark.parametrize("interval", [
    Interval(float("nan"), 3.0, TTA), Interval(1.0, float("inf"), TTA), Interval(4.0, 3.0, TTA),
    Interval(-0.5, 3.0, TTA),
])
def test_invalid_interval_rejected(ruleset, interval):
    with pytest.raises(RuleInputError, match="uncertainty interval"):
        ruleset.evaluate(wml(3.0, interval))
    with pytest.raises(RuleInputError, match="uncertainty interval"):
        ruleset.evaluate(cmb(3, interval))


# --------------------------------------------------------------------------- quality gate


@pytest.mark.parametrize("volume", [3.2, 40.0, float("nan"), -1.0])
def test_withheld_wml_reports_no_number(ruleset, volume):
    """Whatever number the model produced (even an invalid one), a withheld result reports none."""
    f = only(ruleset.evaluate(wml(volume, Interval(1.0, 9.0, TTA), WITHHELD)), "aspirin-sich-wml")
    assert f.category == "not-measurable"
    assert math.isnan(f.input_value)
    assert f.values == {"measurable": 0.0}
    assert f.statement.startswith(f.population + " WML volume is not reliably measurable on this series: ")
    for reason in WITHHELD.reasons:
        assert reason in f.statement
    for number_based in ("aOR", "0.96", "odds ratio", "Category:", "cut-point", "uncertainty interval", " mL"):
        assert number_based not in f.statement, number_based
    assert "No WML-volume subgroup showed safe clinical benefit from periprocedural aspirin or heparin" \
        in f.statement
    assert f.evidence_doi == "10.1186/s13244-025-02095-2" and f.rule_version == "1.4.0"


def test_withheld_cmb_reports_no_count_or_grade(ruleset):
    f = only(ruleset.evaluate(cmb(37, Interval(30, 40, "x"), WITHHELD)), "cmb-burden-ecmo")
    assert f.category == "not-measurable" and math.isnan(f.input_value)
    assert f.values == {"measurable": 0.0}
    assert "not reliably countable" in f.statement and "37" not in f.statement
    for reason in WITHHELD.reasons:
        assert reason in f.statement
    for number_based in ("burden grade 3", "associated", "ACT", "fibrinogen"):
        assert number_based not in f.statement, number_based


def test_withheld_without_reasons_says_so(ruleset):
    f = only(ruleset.evaluate(wml(2.0, quality=Quality(measurable=False))), "aspirin-sich-wml")
    assert "the quality gate gave no reason" in f.statement


def test_measurable_quality_changes_nothing(ruleset):
    ok = Quality(measurable=True, scores={"noise_hu": 4.0})
    assert ruleset.evaluate(wml(3.0, quality=ok)) == ruleset.evaluate(wml(3.0))
    assert ruleset.evaluate(cmb(12, quality=ok)) == ruleset.evaluate(cmb(12))


# --------------------------------------------------------------------------- wording

# Prescriptive words and phrases that no svdmark wording may contain.
FORBIDDEN = [
    r"\bshould\b", r"\bsafe to\b", r"\bmust\b", r"\brecommend", r"\badvis", r"\badvice\b",
    r"\bconsider\b", r"\bindicated\b", r"\bcontraindicat", r"\bwithhold", r"\bavoid\b",
    r"\badminister", r"\bgive\b", r"\bgiving\b", r"\bstart\b", r"\bstop\b", r"\bdo not\b",
    r"\bis safe\b", r"\bsafely\b", r"\bprescrib", r"\bbenefit from aspirin\b", r"\btreat with\b",
]


def _all_strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _all_strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _all_strings(v)


def _scan(text: str) -> list[str]:
    return [p for p in FORBIDDEN if re.search(p, text, flags=re.IGNORECASE)]


def test_forbidden_scanner_catches_prescriptions():
    assert _scan("Aspirin should be withheld")
    assert _scan("It is safe to give heparin")
    assert not _scan("No WML-volume subgroup showed safe clinical benefit")


def test_no_prescriptive_wording_in_rule_file():
    data = tomllib.loads(_packaged_text())
    hits = {s[:60]: _scan(s) for r in data["rule"] for s in _all_strings(r["wording"]) if _scan(s)}
    assert not hits
    hits = {s[:60]: _scan(s) for r in data["rule"] for s in _all_strings(r) if _scan(s)}
    assert not hits


def test_no_prescriptive_wording_in_any_rendered_flag(ruleset):
    cases = [wml(v) for v in (0.0, 0.59, 16.999, 17.0, 120.0)] + [cmb(n) for n in (0, 5, 10, 31)]
    cases += [wml(16.5, Interval(15.0, 18.0, TTA)), cmb(9, Interval(8, 12, TTA))]
    for findings in cases:
        for f in ruleset.evaluate(findings):
            for text in (f.statement, f.name, f.category):
                assert not _scan(text), (text, _scan(text))
            assert "associated" in f.statement
    for findings in (wml(3.0, quality=WITHHELD), cmb(3, quality=WITHHELD)):
        for f in ruleset.evaluate(findings):
            for text in (f.statement, f.name, f.category):
                assert not _scan(text), (text, _scan(text))


@pytest.mark.parametrize("x", [0, 0.5, 1, 8.5, 9, 9.5, 10, 29.5, 30, 30.5, 31, 200])
def test_the_burden_grade_of_a_value_is_the_ecmo_rule_s(x):
    """The SR's and the table's grade span (domain.BurdenGrade.of_value) grades fractional ends as the rule does."""
    from svdmark.rules.engine import _cmb_grade

    (rule,) = [r for r in RuleSet.load().rules if r.id == "cmb-burden-ecmo"]
    assert int(BurdenGrade.of_value(x)) == _cmb_grade(rule, x)
    if float(x).is_integer():
        assert BurdenGrade.of_value(x) == BurdenGrade.from_count(int(x))
