"""What the quality gate and the uncertainty estimate allow an encoder to report.

One place for the two questions every encoder asks: is this result withheld
(``Quality.measurable`` False, so no number, no mask), and which interval goes
with the number (none when withheld).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..domain import AnalysisResult, BurdenGrade, CmbFindings, Findings, Flag, Interval, Quality, Task
from ..rules.engine import NOT_MEASURABLE  # the rules' category of a withheld result

if TYPE_CHECKING:  # pragma: no cover
    from .templates import Templates

__all__ = ["NOT_MEASURABLE", "category_uncertain", "crossing_text", "grade_span", "grade_span_text", "interval",
           "reasons", "withheld"]


def withheld(findings: Findings) -> Quality | None:
    """The quality verdict when it withholds the number, else None."""
    q = getattr(findings, "quality", None)
    return q if q is not None and not q.measurable else None


def interval(findings: Findings) -> Interval | None:
    """The uncertainty interval to report with the number; None when there is none or no number."""
    if withheld(findings) is not None:
        return None
    return getattr(findings, "interval", None)


def grade_span(findings: Findings) -> tuple[int, int] | None:
    """The lowest and highest burden grade of the count's interval (and the count); None without one.

    The grades come from :meth:`BurdenGrade.of_value`, whether or not a flag applies; the ECMO rule grades
    counts and interval ends, whole or not, the same way (the rule set refuses thresholds that differ).
    """
    from .seg import EncodeError

    iv = interval(findings)
    if iv is None or not isinstance(findings, CmbFindings):
        return None
    try:
        low, high = BurdenGrade.spanned(findings.count, iv.low, iv.high)
    except ValueError as exc:
        raise EncodeError(f"microbleed count interval {iv.low!r}-{iv.high!r}: {exc}") from exc
    return int(low), int(high)


def grade_span_text(findings: Findings, templates: "Templates") -> str | None:
    """The CMB template's ``grade_crossing_text`` when the count's interval spans burden grades, else None."""
    span = grade_span(findings)
    if span is None or span[0] == span[1]:
        return None
    iv = interval(findings)
    assert iv is not None
    text = templates.task(Task.CMB)["grade_crossing_text"]
    return text.format(interval_low=float(iv.low), interval_high=float(iv.high), grade_low=span[0], grade_high=span[1])


def reasons(findings: Findings) -> tuple[str, ...]:
    """The gate's reasons for withholding (a placeholder sentence when it gave none)."""
    q = withheld(findings)
    if q is None:
        return ()
    out = tuple(r.strip() for r in q.reasons if r and r.strip())
    return out or ("The quality gate gave no reason.",)


def category_uncertain(flag: Flag) -> bool | None:
    """Whether the flag's interval crosses its category boundary; None when it has no interval."""
    if "category_uncertain" not in flag.values:
        return None
    return bool(flag.values["category_uncertain"])


def crossing_text(result: AnalysisResult, flag: Flag, templates: "Templates") -> str | None:
    """The template's sentence saying that the flag's interval crosses its category boundary.

    None when the flag has no interval or the interval does not cross. The sentence is the
    flag template's ``crossing_text``, formatted with the flag's values (interval_low,
    interval_high, cut_point_ml / grade_low, grade_high).
    """
    from .seg import EncodeError

    if not category_uncertain(flag):
        return None
    ftpl = templates.task(result.model.task)["flags"].get(flag.rule_id, {})
    text = ftpl.get("crossing_text")
    if not text:
        raise EncodeError(f"no crossing_text for flag {flag.rule_id!r} in {templates.source}")
    try:
        return text.format(**flag.values)
    except (KeyError, IndexError, ValueError) as exc:
        raise EncodeError(f"crossing_text of flag {flag.rule_id!r}: {exc!r}") from exc
