"""Findings → descriptive flags, driven by the versioned ``data/rules.toml``.

Public API::

    ruleset = RuleSet.load()            # packaged rules, or RuleSet.load(path)
    ruleset = ruleset.configured(mode, conditions)  # the site's [flags] settings (applicability.py)
    ruleset.info                        # RuleSetInfo(id, version)
    ruleset.evaluate(findings, header)  # tuple[Flag, ...]: flags whose population condition holds

Population: each rule names the population its evidence comes from (``population`` in the
TOML); every flag statement starts with that sentence, also held alone in ``Flag.population``,
and ``Flag.brief`` holds the rule's few short lines for the summary image. Applicability: a
flag is attached only when its condition on the study header holds (``[rule.applies_when]``,
replaceable per site); without a header (tests, self-test) the condition is not checked.

Every number, threshold and word of wording lives in the TOML file. This
module only does arithmetic and string formatting, and refuses inputs it
cannot describe honestly (negative, NaN or infinite volumes or interval ends,
reversed intervals).

Uncertainty and the quality gate (``Findings.interval`` / ``Findings.quality``):
the category is that of the measured value; when the interval's ends fall into
different categories the statement says so and ``Flag.values["category_uncertain"]``
is 1.0 (0.0 for an interval that does not cross; absent without an interval),
with ``interval_low`` / ``interval_high``. When ``quality.measurable`` is False
no number-based flag is produced: each rule gives a flag with category
``NOT_MEASURABLE`` ("not-measurable"), the gate's reasons in its statement,
``input_value`` NaN and ``values == {"measurable": 0.0}``.
"""
from __future__ import annotations

from .applicability import MODES, Applicability
from .engine import NOT_MEASURABLE, RuleInputError, RuleSet

__all__ = ["MODES", "NOT_MEASURABLE", "Applicability", "RuleInputError", "RuleSet"]
