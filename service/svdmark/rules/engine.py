"""Rule engine: loads ``rules.toml`` and turns findings into :class:`Flag` values."""
from __future__ import annotations

import logging
import math
import re
import string
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..domain import (WML_REPORTED_DECIMALS, BurdenGrade, CmbFindings, Findings, Flag, Interval, Quality, RuleSetInfo,
                      WmlFindings, check_reportable)
from ..errors import ConfigError, SvdmarkError
from ..logs import event
from .applicability import Applicability, check_mode

if TYPE_CHECKING:  # pragma: no cover
    from pydicom import Dataset

log = logging.getLogger("svdmark.rules")


class RuleInputError(SvdmarkError, ValueError):
    """A finding cannot be evaluated (negative, NaN or infinite measurement or interval)."""


# Category of every rule's flag when the quality gate withheld the number (``Quality.measurable`` False).
# It is the same string for all rules so that a downstream reader filters on one value.
NOT_MEASURABLE = "not-measurable"

# Keys that every rule's ``[wording]`` must have for uncertainty and the quality gate.
_UNCERTAINTY_WORDING = ("interval_text", "interval_crosses", "not_measurable", "not_measurable_short")

# Words and phrases that prescribe or advise: svdmark states evidence and never a treatment (EVIDENCE.md). A rule
# file whose rendered wording holds one is refused at load.
PRESCRIPTIVE = tuple(re.compile(p, re.IGNORECASE) for p in (
    r"\bshould\b", r"\bsafe to\b", r"\bmust\b", r"\brecommend", r"\badvis", r"\badvice\b",
    r"\bconsider\b", r"\bindicated\b", r"\bcontraindicat", r"\bwithhold", r"\bavoid\b",
    r"\badminister", r"\bgive\b", r"\bgiving\b", r"\bstart\b", r"\bstop\b", r"\bdo not\b",
    r"\bis safe\b", r"\bsafely\b", r"\bprescrib", r"\bbenefit from aspirin\b", r"\btreat with\b"))


def prescriptive(text: str) -> list[str]:
    """The prescriptive words and phrases in ``text`` (none for svdmark's own wording)."""
    return [m.group(0) for p in PRESCRIPTIVE for m in [p.search(text)] if m]


class _Exact(float):
    """A number that never prints with fewer digits than it has: a configured cut-point of 0.59 mL written with
    ``{:.1f}`` reads 0.59, not 0.6 (which is not the cut-point applied); 17.0 still reads 17.0."""

    def __format__(self, spec: str) -> str:
        text = format(float(self), spec)
        try:
            shown = float(text)
        except ValueError:
            return text
        return text if shown == float(self) else repr(float(self))


_APPLIES_TO = {"wml": WmlFindings, "cmb": CmbFindings}
_COMMON_KEYS = (
    "id", "version", "applies_to", "name", "input_name", "input_field", "input_unit",
    "evidence_doi", "evidence_citation", "population", "thresholds", "categories", "wording",
)
_TABLE_KEYS = _COMMON_KEYS + ("applies_when",)


def _require(table: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in table]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")


def _number(table: Mapping[str, Any], key: str, where: str) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class _Rule:
    """Common fields of every rule, straight from the TOML table."""

    id: str
    version: str
    applies_to: str
    name: str
    input_name: str
    input_field: str
    input_unit: str
    evidence_doi: str
    evidence_citation: str
    population: str  # one sentence naming the evidence's population; every statement starts with it
    thresholds: Mapping[str, Any]
    categories: Mapping[str, str]
    wording: Mapping[str, Any]
    applies_when: Applicability

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> "_Rule":
        where = f"rule {table.get('id', '?')!r}"
        _require(table, _TABLE_KEYS, where)
        unknown = set(table) - set(_TABLE_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
        if table["applies_to"] not in _APPLIES_TO:
            raise ConfigError(f"{where}: applies_to must be one of {sorted(_APPLIES_TO)}")
        for key in ("thresholds", "categories", "wording"):
            if not isinstance(table[key], dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
        population = table["population"]
        if not (isinstance(population, str) and population.strip().endswith(".")):
            raise ConfigError(f"{where}: 'population' must be one sentence (ending with '.') naming the "
                              "population the evidence comes from")
        for key in ("brief", "brief_not_measurable"):
            lines = table["wording"].get(key)
            if not (isinstance(lines, list) and lines and all(isinstance(x, str) and x for x in lines)):
                raise ConfigError(f"{where} [wording]: '{key}' must be a non-empty list of short lines")
        fields = {k: table[k] for k in _COMMON_KEYS}
        fields["population"] = population.strip()
        applies = Applicability.parse(table["applies_when"], f"{where} [applies_when]")
        return cls(**fields, applies_when=applies)

    def flag(self, ruleset_version: str, category: str, statement: str, value: float,
             values: dict[str, float], brief_fields: Mapping[str, Any] | None = None) -> Flag:
        """A flag whose statement starts with the population sentence.

        ``value`` is NaN only for a withheld (not reliably measurable) result; ``brief_fields``
        fill the summary image's short lines (``brief``), None for a withheld result
        (``brief_not_measurable``).
        """
        if brief_fields is None:
            brief = tuple(line.format(**{"fixed_limitation": self.wording.get("fixed_limitation", "")})
                          for line in self.wording["brief_not_measurable"])
        else:
            brief = tuple(line.format(**brief_fields) for line in self.wording["brief"])
        return Flag(
            rule_id=self.id,
            rule_version=self.version,
            ruleset_version=ruleset_version,
            name=self.name,
            category=category,
            statement=f"{self.population} {statement}",
            evidence_doi=self.evidence_doi,
            input_name=self.input_name,
            input_value=value,
            input_unit=self.input_unit,
            values=values,
            population=self.population,
            brief=brief,
        )


# --------------------------------------------------------------------------- quality gate, uncertainty


def _withheld(findings: Findings) -> Quality | None:
    """The quality verdict when it says the number must not be reported, else None."""
    q = getattr(findings, "quality", None)
    if q is not None and not q.measurable:
        return q
    return None


def _reasons_text(quality: Quality) -> str:
    reasons = [r.strip().rstrip(".") for r in quality.reasons if r and r.strip()]
    return "; ".join(reasons) if reasons else "the quality gate gave no reason"


def _not_measurable_flag(rule: _Rule, quality: Quality, ruleset_version: str, **extra: str) -> Flag:
    """The flag of a withheld result: no number, no number-based evidence, the gate's reasons.

    ``input_value`` is NaN (there is no measured value; ``Flag.input_value`` is a float) and
    ``values`` holds only ``measurable`` = 0.0 so that a table reader can filter on it.
    """
    fields = {"reasons": _reasons_text(quality), **extra}
    statement = rule.wording["not_measurable"].format(**fields)
    return rule.flag(ruleset_version, NOT_MEASURABLE, statement, math.nan, {"measurable": 0.0}, brief_fields=None)


def _checked(rule: _Rule, findings: Findings) -> None:
    """The finding's number and uncertainty interval, refused when they cannot be described honestly
    (``domain.check_reportable``: the encoders ask the same when no flag applies)."""
    try:
        check_reportable(findings)
    except ValueError as exc:
        raise RuleInputError(f"{rule.id}: {exc}; cannot compute its flag") from None


def _interval_fields(interval: Interval, decimals: int | None = None) -> dict:
    """The interval's ends (as reported, at ``decimals``) and method, for the wording."""
    ends = [float(x) if decimals is None else round(float(x), decimals) for x in (interval.low, interval.high)]
    return {"interval_low": ends[0], "interval_high": ends[1],
            "interval_method": str(interval.method or "method not stated")}


# --------------------------------------------------------------------------- rules


def _aspirin_check(rule: _Rule) -> None:
    where = f"rule {rule.id!r}"
    for key in ("per_ml_or", "per_ml_ci_low", "per_ml_ci_high", "cut_point_ml"):
        _number(rule.thresholds, key, where)
    t = rule.thresholds
    if not (0 < t["per_ml_ci_low"] <= t["per_ml_or"] <= t["per_ml_ci_high"]):
        raise ConfigError(f"{where}: need 0 < per_ml_ci_low <= per_ml_or <= per_ml_ci_high")
    if t["cut_point_ml"] < 0:
        raise ConfigError(f"{where}: cut_point_ml must be >= 0")
    if not isinstance(t.get("cut_point_provenance"), str) or not t["cut_point_provenance"]:
        raise ConfigError(f"{where}: cut_point_provenance must document where the cut-point comes from")
    _require(rule.categories, ("at_or_above", "below", "not_measurable"), f"{where} [categories]")
    _require(rule.wording, ("statement", "at_or_above", "below", "at_or_above_short",
                            "below_short", "fixed_limitation") + _UNCERTAINTY_WORDING, f"{where} [wording]")
    _require_fields(rule, "statement", ("category_text", "interval_text", "uncertainty_text", "fixed_limitation"))
    _require_not_measurable_category(rule, where)


def _require_fields(rule: _Rule, key: str, names: tuple[str, ...]) -> None:
    """The wording ``key`` says what it must: its category, its uncertainty, its fixed limitation (str.format
    ignores a field a template leaves out, so a site's file could drop the uncertainty without a word)."""
    used = {f for _, f, _, _ in string.Formatter().parse(str(rule.wording[key])) if f}
    missing = [n for n in names if n not in used]
    if missing:
        fields = ", ".join("{" + n + "}" for n in missing)
        raise ConfigError(f"rule {rule.id!r} [wording] {key}: must use {fields} (a copy of rule set 1.2.0: put "
                          "{fixed_limitation} where its statement states the limitation)")


def _require_not_measurable_category(rule: _Rule, where: str) -> None:
    if rule.categories["not_measurable"] != NOT_MEASURABLE:
        raise ConfigError(f"{where} [categories]: not_measurable must be {NOT_MEASURABLE!r} (the SR, summary "
                          "image and tables recognise withheld results by it)")


def _aspirin_eval(rule: _Rule, findings: WmlFindings, ruleset_version: str) -> Flag:
    """Category by the point estimate; uncertain when the interval's ends fall in different categories.

    The ends are compared category by category (low < cut <= high), which is
    ``Interval.crosses(cut)`` plus the case high == cut, where the upper end is already
    "at or above". The point estimate is included in case it lies outside the interval.
    """
    withheld = _withheld(findings)
    if withheld is not None:
        return _not_measurable_flag(rule, withheld, ruleset_version,
                                    fixed_limitation=rule.wording["fixed_limitation"])
    _checked(rule, findings)
    v = round(float(findings.volume_ml), WML_REPORTED_DECIMALS)  # as reported: its category is the one a reader sees
    t = rule.thresholds
    cut = _Exact(t["cut_point_ml"])
    above = v >= cut
    side = "at_or_above" if above else "below"
    fields = {
        "volume_ml": v,
        "or_ratio": float(t["per_ml_or"]) ** v,
        "ci_low": float(t["per_ml_ci_low"]) ** v,
        "ci_high": float(t["per_ml_ci_high"]) ** v,
        "cut_point_ml": cut,
        "per_ml_or": float(t["per_ml_or"]),
        "per_ml_ci_low": float(t["per_ml_ci_low"]),
        "per_ml_ci_high": float(t["per_ml_ci_high"]),
    }
    category_text = rule.wording[side].format(**fields)
    values = {k: fields[k] for k in ("or_ratio", "ci_low", "ci_high", "cut_point_ml",
                                     "per_ml_or", "per_ml_ci_low", "per_ml_ci_high")}
    interval = findings.interval
    interval_text = uncertainty_text = ""
    if interval is not None:
        ifields = _interval_fields(interval, WML_REPORTED_DECIMALS)
        ends = {x >= cut for x in (ifields["interval_low"], v, ifields["interval_high"])}
        uncertain = len(ends) > 1
        interval_text = rule.wording["interval_text"].format(**fields, **ifields)
        if uncertain:
            uncertainty_text = " " + rule.wording["interval_crosses"].format(**fields, **ifields)
        values.update(interval_low=ifields["interval_low"], interval_high=ifields["interval_high"],
                      category_uncertain=1.0 if uncertain else 0.0)
    statement = rule.wording["statement"].format(category_text=category_text, interval_text=interval_text,
                                                 uncertainty_text=uncertainty_text,
                                                 fixed_limitation=rule.wording["fixed_limitation"], **fields)
    short = rule.wording[f"{side}_short"].format(**fields)
    return rule.flag(ruleset_version, rule.categories[side], statement, v, values,
                     brief_fields={**fields, "category_short": short,
                                   "fixed_limitation": rule.wording["fixed_limitation"]})


def _cmb_grade(rule: _Rule, count: float) -> int:
    """Grade of a count; also of a fractional interval end: grade 1 is fewer than low_max + 1 (9.5 with low_max 9:
    "fewer than 10"), grade 3 more than moderate_max (30.5)."""
    t = rule.thresholds
    if count <= 0:
        return 0
    if count < t["low_max"] + 1:
        return 1
    if count <= t["moderate_max"]:
        return 2
    return 3


def _cmb_check(rule: _Rule) -> None:
    where = f"rule {rule.id!r}"
    for key in ("low_max", "moderate_max"):
        value = rule.thresholds.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: '{key}' must be a positive integer")
    if rule.thresholds["low_max"] >= rule.thresholds["moderate_max"]:
        raise ConfigError(f"{where}: low_max must be below moderate_max")
    # The SR encodes domain.BurdenGrade; the file must agree with it.
    for n in range(0, int(rule.thresholds["moderate_max"]) + 20):
        if _cmb_grade(rule, n) != int(BurdenGrade.from_count(n)):
            raise ConfigError(f"{where}: thresholds disagree with domain.BurdenGrade at count {n}")
    _require(rule.categories, tuple(f"grade_{g}" for g in range(4)) + ("not_measurable",), f"{where} [categories]")
    _require(rule.wording, ("statement",) + _UNCERTAINTY_WORDING, f"{where} [wording]")
    _require_fields(rule, "statement", ("interval_text", "uncertainty_text"))
    _require_not_measurable_category(rule, where)


def _cmb_eval(rule: _Rule, findings: CmbFindings, ruleset_version: str) -> Flag:
    """Grade by the count; uncertain when the interval's ends (and the count) fall in different grades.

    Every grade boundary counts, 0/1 (none vs. any) as well as 9/10 and 30/31.
    """
    withheld = _withheld(findings)
    if withheld is not None:
        return _not_measurable_flag(rule, withheld, ruleset_version)
    _checked(rule, findings)
    count = findings.count
    grade = _cmb_grade(rule, count)
    key = f"grade_{grade}"
    fields = {
        "count": count,
        "grade": grade,
        "grade_meaning": BurdenGrade(grade).meaning,
    }
    values = {"grade": float(grade), "low_max": float(rule.thresholds["low_max"]),
              "moderate_max": float(rule.thresholds["moderate_max"])}
    interval = findings.interval
    interval_text = uncertainty_text = ""
    if interval is not None:
        ifields = _interval_fields(interval)
        grades = [_cmb_grade(rule, x) for x in (ifields["interval_low"], count, ifields["interval_high"])]
        g_low, g_high = min(grades), max(grades)
        uncertain = g_low != g_high
        ifields.update(grade_low=g_low, grade_high=g_high)
        interval_text = rule.wording["interval_text"].format(**fields, **ifields)
        if uncertain:
            uncertainty_text = " " + rule.wording["interval_crosses"].format(**fields, **ifields)
        values.update(interval_low=ifields["interval_low"], interval_high=ifields["interval_high"],
                      grade_low=float(g_low), grade_high=float(g_high),
                      category_uncertain=1.0 if uncertain else 0.0)
    statement = rule.wording["statement"].format(interval_text=interval_text, uncertainty_text=uncertainty_text,
                                                 **fields)
    return rule.flag(ruleset_version, rule.categories[key], statement, float(count), values, brief_fields=fields)


_IMPLEMENTATIONS: dict[str, tuple[Callable[[_Rule], None], Callable[..., Flag]]] = {
    "aspirin-sich-wml": (_aspirin_check, _aspirin_eval),
    "cmb-burden-ecmo": (_cmb_check, _cmb_eval),
}


# --------------------------------------------------------------------------- rule set


class RuleSet:
    """A loaded, validated rule set."""

    def __init__(self, info: RuleSetInfo, rules: tuple[_Rule, ...], source: str, mode: str = "condition"):
        self._info = info
        self._rules = rules
        self.source = source
        self.mode = check_mode(mode)
        self._values: dict[str, tuple[str, ...]] = {}  # rule id -> every value name its flags carry (self-test)

    def configured(self, mode: str = "condition", conditions: Mapping[str, Any] | None = None) -> "RuleSet":
        """This rule set with the site's applicability: ``mode`` (condition/always/never) and, per
        rule id, a condition table replacing the packaged ``[rule.applies_when]``.

        Raises :class:`ConfigError` for an unknown mode or rule id, or a malformed condition.
        """
        conditions = dict(conditions or {})
        known = {r.id for r in self._rules}
        unknown = sorted(set(conditions) - known)
        if unknown:
            raise ConfigError(f"[flags.conditions]: unknown rule id(s) {', '.join(unknown)}; known: {sorted(known)}")
        rules = tuple(
            replace(r, applies_when=Applicability.parse(conditions[r.id], f"[flags.conditions.{r.id}]"))
            if r.id in conditions else r
            for r in self._rules)
        configured = RuleSet(self._info, rules, self.source, check_mode(mode))
        configured._values = self._values
        return configured

    def applies(self, rule: _Rule, header: "Dataset | None") -> tuple[bool, str]:
        """Whether ``rule``'s flag is attached for a study with this ``header``, and why.

        Without a header (callers that select their own population: the self-test, tests,
        research scripts) the condition is not checked; ``mode`` still applies.
        """
        if self.mode == "never":
            return False, "[flags] applicability = never"
        if self.mode == "always" or header is None:
            return True, "[flags] applicability = always" if self.mode == "always" else "no header to check"
        ok, why = rule.applies_when.check(header)
        return ok, f"{rule.applies_when.description}: {why}"

    @classmethod
    def load(cls, path: str | Path | None = None) -> "RuleSet":
        """Load ``path`` or the packaged ``svdmark/data/rules.toml``.

        Raises :class:`ConfigError` with the file name when anything is
        missing, malformed or inconsistent.
        """
        try:
            if path is None:
                ref = resources.files("svdmark") / "data" / "rules.toml"
                text, source = ref.read_text(encoding="utf-8"), "svdmark/data/rules.toml"
            else:
                text, source = Path(path).read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise ConfigError(f"cannot read rule file {path}: {exc}") from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
        try:
            return cls._from_dict(data, source)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any], source: str) -> "RuleSet":
        head = data.get("ruleset")
        if not isinstance(head, dict):
            raise ConfigError("missing [ruleset] table")
        _require(head, ("id", "version"), "[ruleset]")
        tables = data.get("rule")
        if not isinstance(tables, list) or not tables:
            raise ConfigError("no [[rule]] entries")
        rules = []
        seen = set()
        for table in tables:
            rule = _Rule.from_table(table)
            if rule.id in seen:
                raise ConfigError(f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
            impl = _IMPLEMENTATIONS.get(rule.id)
            if impl is None:
                raise ConfigError(f"unknown rule id {rule.id!r}; known: {sorted(_IMPLEMENTATIONS)}")
            impl[0](rule)
            rules.append(rule)
        info = RuleSetInfo(id=str(head["id"]), version=str(head["version"]))
        ruleset = cls(info, tuple(rules), source)
        ruleset._self_test()
        return ruleset

    def _self_test(self) -> None:
        """Format every wording template once so a typo fails at load, not on a patient; the flags it makes
        name every value each rule can carry (:meth:`value_names`)."""
        import numpy as np

        from ..domain import Microbleed

        empty = np.zeros((1, 1, 1), np.uint8)
        withheld = Quality(measurable=False, reasons=("self-test reason",))
        cases: list[Findings] = [
            WmlFindings(volume_ml=0.0, mask=empty),
            WmlFindings(volume_ml=1e6, mask=empty),
            WmlFindings(volume_ml=2.0, mask=empty, interval=Interval(0.0, 1e6, "self-test")),
            WmlFindings(volume_ml=math.nan, mask=empty, quality=withheld),
            CmbFindings(microbleeds=(), mask=empty, quality=withheld),
        ]
        for n in (0, 1, 10, 31):
            mbs = tuple(Microbleed((0.0, 0.0, 0.0), 3.0, 1.0) for _ in range(n))
            cases += [CmbFindings(microbleeds=mbs, mask=empty),
                      CmbFindings(microbleeds=mbs, mask=empty, interval=Interval(0.0, 40.0, "self-test"))]
        values: dict[str, dict[str, None]] = {r.id: {} for r in self._rules}
        try:
            for findings in cases:
                for flag in self.evaluate(findings):
                    values[flag.rule_id].update(dict.fromkeys(flag.values))
                    for text in (flag.statement, flag.name, flag.category, *flag.brief):
                        if found := prescriptive(text):
                            raise ConfigError(f"rule {flag.rule_id!r}: its wording prescribes or advises "
                                              f"({', '.join(found)!r}): svdmark states the evidence "
                                              "and never a treatment")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"wording template error: {exc!r}") from exc
        self._values = {rid: tuple(names) for rid, names in values.items()}

    def value_names(self, rule_id: str) -> tuple[str, ...]:
        """Every name in ``Flag.values`` that this rule's flags can carry (a results table's fixed columns)."""
        return self._values[rule_id]

    @property
    def info(self) -> RuleSetInfo:
        return self._info

    @property
    def rules(self) -> tuple[_Rule, ...]:
        return self._rules

    def rule(self, rule_id: str) -> _Rule:
        for r in self._rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    def evaluate(self, findings: Findings, header: "Dataset | None" = None) -> tuple[Flag, ...]:
        """Flags of every rule that applies to this kind of findings and, given the study's
        ``header``, whose population condition holds (see :meth:`applies`); in file order."""
        flags = []
        for rule in self._rules:
            if not isinstance(findings, _APPLIES_TO[rule.applies_to]):
                continue
            ok, why = self.applies(rule, header)
            if not ok:
                # the condition's description, not the header values it read (free text may name people)
                event(log, "flag_not_attached", rule=rule.id,
                      reason=f"not {rule.applies_when.description}" if self.mode == "condition" else why)
                continue
            flags.append(_IMPLEMENTATIONS[rule.id][1](rule, findings, self._info.version))
        return tuple(flags)

    def __repr__(self) -> str:
        return f"RuleSet({self._info.id} {self._info.version}, {len(self._rules)} rules, {self.source})"
